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
        self.trust = options.trust
        self.providers = providers
        # Untrusted: a contained worker, every batch under a time and memory limit.
        self.session = open_session(self.path, trust=options.trust, providers=providers)
        self.input_specs = merge_specs(self.session.input_specs, options.inputs)
        self.output_names = self.session.output_names

    def predict(self, feeds: Feeds) -> Feeds:
        return self.session.run(feeds)

    def timed_call(self, feeds: Feeds):
        """One call as the ONNX side of a benchmark makes it: ONNX Runtime's run alone, without
        predict's error wrapping and output conversion. Those cost about a microsecond, which
        on a small graph read as a 1.1x speed-up of the same file over itself. None: the
        contained worker times its own run (see call_times)."""
        if not self.trust:
            return None
        ort, names = self.session.session, self.session.output_names
        return lambda: ort.run(names, feeds)

    def set_timing(self, threads: int | None, *, spinning: bool) -> None:
        """Run at this intra-op thread count and spin policy, as the ONNX side of a benchmark
        does, so a speed-up compares like with like."""
        from onnxkit.runtime.session import make_session

        if not self.trust:  # the same contained worker, a new session in it
            self.session.configure(threads=threads, spinning=spinning)
            return
        self.session = make_session(self.path, providers=self.providers, threads=threads, spinning=spinning)

    def call_times(self) -> tuple[float, float] | None:
        """(wall ms, CPU ms) of the last predict where this process cannot measure them (the
        contained worker's session run, without the pipe); None: in-process, time it here."""
        return None if self.trust else self.session.last_call_ms

    @property
    def contained(self) -> bool:
        return not self.trust

    def describe(self) -> dict:
        """Also where it runs and the intra-op threads and spin policy its session has (a
        contained worker's as that worker's session reports them)."""
        if self.trust:
            so = self.session.session.get_session_options()
            try:
                spinning = so.get_session_config_entry("session.intra_op.allow_spinning") != "0"
            except RuntimeError:  # not set: ONNX Runtime's default, which spins
                spinning = True
            threads = so.intra_op_num_threads or None
        else:
            threads, spinning = self.session.threads, self.session.spinning
        return {**super().describe(), "runs_in": "this process" if self.trust else "a contained worker process",
                "intra_op_threads": threads, "spinning": spinning}

    def export(self, options: LoadOptions) -> ExportOutcome:
        return ExportOutcome(model=self.loaded.model, exporter="none (already ONNX)")


def load(source: str | Path, options: LoadOptions) -> OnnxSource:
    return OnnxSource(Path(source), options)
