// What both runners of onnxkit's `web` target do once onnxruntime-web is loaded: build the
// input tensors, run every feed, hand each output back as raw little-endian bytes (strings as
// JSON), and time the first feed. They differ only in where bytes come from and go: files
// under Node.js (run_model.mjs), the page server in a browser (page.mjs). That is `io`:
//   io.model() and io.external(entry) and io.input(file) resolve to Uint8Array,
//   io.output(file, bytes) stores an output.
const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
  int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array, bool: Uint8Array,
  uint32: Uint32Array, uint64: BigUint64Array, float16: Uint16Array,
};

function tensorOf(ort, spec, bytes) {
  if (spec.dtype === "string") {
    return new ort.Tensor("string", JSON.parse(new TextDecoder().decode(bytes)), spec.shape);
  }
  const Cls = ARRAYS[spec.dtype];
  if (!Cls) throw new Error(`input dtype ${spec.dtype} is not supported by onnxruntime-web`);
  // A copy owns an aligned buffer of its own (a Node.js Buffer may be a view into a pool).
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new ort.Tensor(spec.dtype, new Cls(copy.buffer), spec.shape);
}

function outputBytes(name, t) {
  const data = t.data;
  if (t.type === "string") return new TextEncoder().encode(JSON.stringify(data));
  if (Array.isArray(data)) throw new Error(`output ${name} of type ${t.type} cannot be written back`);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

// Fills `result` (stage, outputs, latency_ms) as it goes, so a failure leaves the stage reached.
export async function runJob(ort, job, io, result) {
  // The wasm build cannot open files itself: the model and its external data go in as bytes.
  const externalData = [];
  for (const e of job.external ?? []) externalData.push({ path: e.path, data: await io.external(e) });
  const session = await ort.InferenceSession.create(await io.model(), { executionProviders: ["wasm"], externalData });
  result.stage = "run";
  const feedsList = [];
  for (const f of job.feeds) {
    const feed = {};
    for (const [name, spec] of Object.entries(f)) feed[name] = tensorOf(ort, spec, await io.input(spec.file));
    feedsList.push(feed);
  }
  for (let i = 0; i < feedsList.length; i++) {
    const outs = await session.run(feedsList[i]);
    const meta = {};
    let j = 0;
    for (const [name, t] of Object.entries(outs)) {
      const file = `out_${i}_${j++}.bin`;
      await io.output(file, outputBytes(name, t));
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
}
