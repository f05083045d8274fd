"""I/O binding: keep inputs and outputs on the device so a timed run measures the model,
not host<->device copies. Used by bench on CUDA/TensorRT; works on CPU too (device 'cpu'),
which is how it is tested without a GPU."""

from __future__ import annotations

import numpy as np

from onnxkit.errors import InputError
from onnxkit.runtime.session import OnnxSession, ort

# provider -> the OrtValue device name its memory lives on
DEVICE_OF: dict[str, str] = {
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "ROCMExecutionProvider": "cuda",  # ORT's ROCm build names HIP memory 'cuda' in OrtValue
    "CPUExecutionProvider": "cpu",
}


def device_for(session: OnnxSession) -> str | None:
    """The device I/O binding should use for this session, or None when it does not help."""
    first = session.providers[0] if session.providers else "CPUExecutionProvider"
    dev = DEVICE_OF.get(first)
    return dev if dev and dev != "cpu" else None


class BoundRunner:
    """A session with its inputs copied to ``device`` once and its outputs left there.

    ``run()`` is what bench times; ``outputs()`` copies the results to host memory afterwards.
    """

    def __init__(self, session: OnnxSession, feeds: dict[str, np.ndarray], *, device: str = "cuda", device_id: int = 0) -> None:
        rt = ort()
        self.session = session
        self.device = device
        self.device_id = device_id
        sess = session.session
        self.binding = sess.io_binding()
        # Keep the device copies alive as long as the binding: ORT only holds raw pointers.
        self._inputs = {}
        try:
            for name, arr in feeds.items():
                arr = np.ascontiguousarray(arr)
                if device == "cpu":
                    self.binding.bind_cpu_input(name, arr)
                else:
                    value = rt.OrtValue.ortvalue_from_numpy(arr, device, device_id)
                    self._inputs[name] = value
                    self.binding.bind_ortvalue_input(name, value)
            for name in session.output_names:
                # Unshaped binding: ORT allocates each output on the device at run time.
                self.binding.bind_output(name, device, device_id)
        except Exception as exc:
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"cannot bind inputs/outputs on {device}:{device_id}: {msg}") from exc

    def run(self) -> None:
        try:
            self.session.session.run_with_iobinding(self.binding)
        except Exception as exc:
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"ONNX Runtime could not run the model with I/O binding: {msg}") from exc
        # Device kernels are asynchronous; without this the timer would stop before they end.
        self.binding.synchronize_outputs()

    def outputs(self) -> dict[str, np.ndarray]:
        return dict(zip(self.session.output_names, self.binding.copy_outputs_to_cpu()))


def device_id_of(options: dict[str, dict[str, str]] | None, provider: str) -> int:
    raw = ((options or {}).get(provider) or {}).get("device_id", "0")
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"device_id must be an integer, got {raw!r}") from None
