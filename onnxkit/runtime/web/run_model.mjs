// Runs an ONNX model with onnxruntime-web's WebAssembly backend (the kernels a browser
// runs) under Node.js, for onnxkit's `web` target.
// Usage: node run_model.mjs ORT_WEB_DIR JOB_DIR
// JOB_DIR/job.json: {"model": path, "external": [{"path": location, "file": absolute path}],
//                   "feeds": [{name: {"dtype", "shape", "file"}}], "timed_runs": n}
// Writes JOB_DIR/out_<feed>_<index>.bin (raw little-endian) and JOB_DIR/result.json.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { performance } from "node:perf_hooks";

const [ortDir, jobDir] = process.argv.slice(2);
const ort = await import(pathToFileURL(join(ortDir, "dist", "ort.node.min.mjs")).href).catch(
  () => import(pathToFileURL(join(ortDir, "dist", "ort.min.mjs")).href));
ort.env.wasm.numThreads = 1; // deterministic, and no worker threads to leak past a timeout

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array, bool: Uint8Array,
  uint32: Uint32Array, uint64: BigUint64Array, float16: Uint16Array,
};

function tensorOf(spec) {
  if (spec.dtype === "string") {
    return new ort.Tensor("string", JSON.parse(readFileSync(join(jobDir, spec.file), "utf8")), spec.shape);
  }
  const bytes = readFileSync(join(jobDir, spec.file));
  const Cls = ARRAYS[spec.dtype];
  if (!Cls) throw new Error(`input dtype ${spec.dtype} is not supported by onnxruntime-web`);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new ort.Tensor(spec.dtype, new Cls(copy.buffer), spec.shape);
}

const job = JSON.parse(readFileSync(join(jobDir, "job.json"), "utf8"));
const result = { stage: "load", error: null, outputs: [], latency_ms: null, version: ort.env.versions?.web ?? null };
try {
  // The wasm build cannot open files itself: the model and its external data go in as bytes.
  const externalData = (job.external ?? []).map((e) => ({ path: e.path, data: new Uint8Array(readFileSync(e.file)) }));
  const session = await ort.InferenceSession.create(new Uint8Array(readFileSync(job.model)),
    { executionProviders: ["wasm"], externalData });
  result.stage = "run";
  const feedsList = job.feeds.map((f) => Object.fromEntries(Object.entries(f).map(([k, v]) => [k, tensorOf(v)])));
  for (let i = 0; i < feedsList.length; i++) {
    const outs = await session.run(feedsList[i]);
    const meta = {};
    let j = 0;
    for (const [name, t] of Object.entries(outs)) {
      const file = `out_${i}_${j++}.bin`;
      const data = t.data;
      if (t.type === "string") {
        writeFileSync(join(jobDir, file), JSON.stringify(data));
      } else if (Array.isArray(data)) {
        throw new Error(`output ${name} of type ${t.type} cannot be written back`);
      } else {
        writeFileSync(join(jobDir, file), Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      }
      meta[name] = { dtype: t.type, shape: t.dims, file };
    }
    result.outputs.push(meta);
  }
  if (feedsList.length) {
    const times = [];
    for (let k = 0; k < job.timed_runs; k++) {
      const t0 = performance.now();
      await session.run(feedsList[0]);
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    result.latency_ms = times[Math.floor(times.length / 2)];
  }
  result.stage = "ran";
} catch (err) {
  result.error = String(err?.message ?? err).split("\n")[0].slice(0, 400);
}
writeFileSync(join(jobDir, "result.json"), JSON.stringify(result));
