// Runs an ONNX model with onnxruntime-web's WebAssembly backend inside a browser page, for
// onnxkit's `web` target. Everything comes from the server that served this page (bound to
// 127.0.0.1, under a per-run secret path): job.json, model.onnx, the inputs, the external
// data, and onnxruntime-web itself. Outputs go back with POST out/<file>, then POST result.
async function bytes(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`GET ${path}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function post(path, body, type) {
  const r = await fetch(path, { method: "POST", body, headers: { "Content-Type": type } });
  if (!r.ok) throw new Error(`POST ${path}: HTTP ${r.status}`);
}

const result = { stage: "load", error: null, outputs: [], latency_ms: null, version: null, user_agent: navigator.userAgent };
try {
  // Imported here, not statically: a page whose import fails must still post why.
  const ort = await import("./ort/ort.wasm.min.mjs");
  const { runJob } = await import("./job.mjs");
  result.version = ort.env.versions?.web ?? null;
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, and one keeps runs repeatable
  ort.env.wasm.proxy = false;
  const job = await (await fetch("job.json")).json();
  await runJob(ort, job, {
    model: () => bytes("model.onnx"),
    external: (e) => bytes(e.url),
    input: (file) => bytes(`in/${file}`),
    output: (file, data) => post(`out/${file}`, data, "application/octet-stream"),
  }, result);
} catch (err) {
  result.error = String(err?.message ?? err).split("\n")[0].slice(0, 400);
}
await post("result", JSON.stringify(result), "application/json");
