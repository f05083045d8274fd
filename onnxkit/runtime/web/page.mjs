// Runs an ONNX model with onnxruntime-web's WebAssembly backend inside a browser page, for
// onnxkit's `web` target. Everything comes from the server that served this page (bound to
// 127.0.0.1, under a per-run secret path): job.json, model.onnx, the inputs, the external
// data, and onnxruntime-web itself. Outputs go back with POST out/<file>, then POST result.
const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array, bool: Uint8Array,
  uint32: Uint32Array, uint64: BigUint64Array, float16: Uint16Array,
};

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
  result.version = ort.env.versions?.web ?? null;
  ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, and one keeps runs repeatable
  ort.env.wasm.proxy = false;
  const job = await (await fetch("job.json")).json();
  const externalData = [];
  for (const e of job.external) externalData.push({ path: e.path, data: await bytes(e.url) });
  const session = await ort.InferenceSession.create(await bytes("model.onnx"), { executionProviders: ["wasm"], externalData });
  result.stage = "run";
  const feedsList = [];
  for (const f of job.feeds) {
    const feed = {};
    for (const [name, spec] of Object.entries(f)) {
      if (spec.dtype === "string") {
        const words = JSON.parse(new TextDecoder().decode(await bytes(`in/${spec.file}`)));
        feed[name] = new ort.Tensor("string", words, spec.shape);
        continue;
      }
      const Cls = ARRAYS[spec.dtype];
      if (!Cls) throw new Error(`input dtype ${spec.dtype} is not supported by onnxruntime-web`);
      feed[name] = new ort.Tensor(spec.dtype, new Cls((await bytes(`in/${spec.file}`)).buffer), spec.shape);
    }
    feedsList.push(feed);
  }
  for (let i = 0; i < feedsList.length; i++) {
    const outs = await session.run(feedsList[i]);
    const meta = {};
    let j = 0;
    for (const [name, t] of Object.entries(outs)) {
      const file = `out_${i}_${j++}.bin`;
      const data = t.data;
      if (t.type === "string") {
        await post(`out/${file}`, new TextEncoder().encode(JSON.stringify(data)), "application/octet-stream");
      } else if (Array.isArray(data)) {
        throw new Error(`output ${name} of type ${t.type} cannot be written back`);
      } else {
        await post(`out/${file}`, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), "application/octet-stream");
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
await post("result", JSON.stringify(result), "application/json");
