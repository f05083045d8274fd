// Runs an ONNX model with onnxruntime-web's WebAssembly backend (the kernels a browser
// runs) under Node.js, for onnxkit's `web` target.
// Usage: node run_model.mjs ORT_WEB_DIR JOB_DIR
// JOB_DIR/job.json: {"model": path, "external": [{"path": location, "file": absolute path}],
//                   "feeds": [{name: {"dtype", "shape", "file"}}], "timed_runs": n}
// Writes JOB_DIR/out_<feed>_<index>.bin (raw little-endian) and JOB_DIR/result.json.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { runJob } from "./job.mjs";

const [ortDir, jobDir] = process.argv.slice(2);
const ort = await import(pathToFileURL(join(ortDir, "dist", "ort.node.min.mjs")).href).catch(
  () => import(pathToFileURL(join(ortDir, "dist", "ort.min.mjs")).href));
ort.env.wasm.numThreads = 1; // deterministic, and no worker threads to leak past a timeout

const job = JSON.parse(readFileSync(join(jobDir, "job.json"), "utf8"));
const result = { stage: "load", error: null, outputs: [], latency_ms: null, version: ort.env.versions?.web ?? null };
const io = {
  model: async () => new Uint8Array(readFileSync(job.model)),
  external: async (e) => new Uint8Array(readFileSync(e.file)),
  input: async (file) => readFileSync(join(jobDir, file)),
  output: async (file, bytes) => writeFileSync(join(jobDir, file), bytes),
};
try {
  await runJob(ort, job, io, result);
} catch (err) {
  result.error = String(err?.message ?? err).split("\n")[0].slice(0, 400);
}
writeFileSync(join(jobDir, "result.json"), JSON.stringify(result));
