"""An ONNX file as a source: the reference side of ONNX-vs-ONNX validation."""

from __future__ import annotations

from pathlib import Path

from onnxkit.foundation.data import Feeds
from onnxkit.foundation.spec import merge_specs
from onnxkit.frameworks.base import ExportOutcome, LoadOptions, SourceModel


class OnnxSource(SourceModel):
    framework = "onnx"

    def __init__(self, path: Path, options: LoadOptions, providers: list[str] | None = None) -> None:
        from onnxkit.runtime.contained import open_session
        from onnxkit.foundation.onnx_io import load_onnx

        import onnxruntime

        self.loaded = load_onnx(path, trust=options.trust)
        self.path = Path(path)
        self.framework_version = f"onnxruntime {onnxruntime.__version__}"
        # Untrusted: a contained worker, every batch under a time and memory limit.
        self.session = open_session(self.path, trust=options.trust, providers=providers)
        self.input_specs = merge_specs(self.session.input_specs, options.inputs)
        self.output_names = self.session.output_names

    def predict(self, feeds: Feeds) -> Feeds:
        return self.session.run(feeds)

    def export(self, options: LoadOptions) -> ExportOutcome:
        return ExportOutcome(model=self.loaded.model, exporter="none (already ONNX)")


def load(source: str | Path, options: LoadOptions) -> OnnxSource:
    return OnnxSource(Path(source), options)
