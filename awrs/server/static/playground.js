// The awrs playground: one streamed request with awrs_events, drawn step by step.
"use strict";

const EXAMPLES = {
  regex: {
    constraint: "[A-Z][a-z]+( [a-z]+)?: #[0-9A-F]{6}",
    prompt: "Name one colour and give its hex code, like this: Teal: #008080",
  },
  json: {
    constraint: JSON.stringify({
      type: "object",
      properties: { name: { type: "string", maxLength: 20 }, age: { type: "integer", minimum: 0, maximum: 30 } },
      required: ["name", "age"], additionalProperties: false,
    }, null, 2),
    prompt: "Describe a cat as JSON with its name and age.",
  },
  grammar: {
    constraint: 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no" | "maybe"',
    prompt: "Is the sky blue? Answer in one sentence.",
  },
  choice: { constraint: "yes\nno\nmaybe", prompt: "Is water wet? Answer yes, no or maybe." },
};

const $ = (id) => document.getElementById(id);
let segments = [];  // per particle: [{text, rejected, rejections, eos}] -- its tokens so far

function fillExample() {
  const example = EXAMPLES[$("kind").value];
  $("constraint").value = example.constraint;
  $("prompt").value = example.prompt;
}

function requestBody() {
  const particles = Number($("particles").value);
  const body = {
    stream: true, stream_options: { awrs_events: true },
    method: $("method").value, particles, max_tokens: Number($("max-tokens").value),
    seed: Number($("seed").value), masks: $("masks").value, n: Math.min(5, particles),
  };
  const text = $("constraint").value;
  const kind = $("kind").value;
  if (kind === "regex") body.guided_regex = text;
  else if (kind === "grammar") body.guided_grammar = text;
  else if (kind === "choice") body.guided_choice = text.split("\n").filter((line) => line.length);
  else body.response_format = { type: "json_schema", json_schema: { name: "schema", schema: JSON.parse(text) } };
  if ($("chat").checked) body.messages = [{ role: "user", content: $("prompt").value }];
  else body.prompt = $("prompt").value;
  return body;
}

function setStatus(text) { $("status").textContent = text; }

function tokenSpan(seg) {
  const span = document.createElement("span");
  span.className = "tok" + (seg.rejections ? " rejecting" : "") + (seg.eos ? " eos" : "");
  span.textContent = seg.eos ? "⏎EOS" : seg.text;
  const listed = seg.rejected.map((t) => JSON.stringify(t)).join(", ");
  span.title = seg.rejections
    ? `rejected first (${seg.rejections}): ${listed}${seg.rejections > seg.rejected.length ? ", …" : ""}`
    : "accepted at the first draw";
  return span;
}

function renderStep(event) {
  for (const d of event.drawn) {
    if (d.token === null) continue;  // no token: the particle died at this step
    segments[d.particle].push({ text: d.token, rejected: d.rejected, rejections: d.rejections, eos: d.eos });
  }
  if (event.parents) {
    segments = event.parents.map((p) => segments[p].slice());
    const item = document.createElement("li");
    item.textContent = `step ${event.step}: resampled — now copies of particles ${event.parents.join(", ")}`;
    $("resamplings").appendChild(item);
  }
  const carrying = event.particles.filter((p) => p.log_weight !== null).map((p) => p.log_weight);
  const top = carrying.length ? Math.max(...carrying) : 0;
  const total = carrying.reduce((sum, w) => sum + Math.exp(w - top), 0) || 1;
  const body = $("particles-table").tBodies[0];
  body.replaceChildren();
  event.particles.forEach((p, i) => {
    const row = body.insertRow();
    row.dataset.particle = String(i);
    row.className = p.state + (event.parents ? " resampled" : "");
    row.insertCell().textContent = String(i);
    const state = row.insertCell();
    state.className = "state";
    state.textContent = p.state;
    const weight = row.insertCell();
    weight.className = "weight";
    const share = p.log_weight === null ? 0 : Math.exp(p.log_weight - top) / total;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * share).toFixed(1)}%`;
    weight.title = p.log_weight === null ? "weight 0" : `log w = ${p.log_weight.toFixed(3)}, share ${share.toFixed(3)}`;
    weight.appendChild(bar);
    const text = row.insertCell();
    text.className = "text";
    for (const seg of segments[i]) text.appendChild(tokenSpan(seg));
  });
  const ess = event.ess === null ? "–" : event.ess.toFixed(2);
  $("step-info").textContent = `step ${event.step} · ESS of the unfinished ${ess}`;
}

function renderResult(ext) {
  const body = $("posterior-table").tBodies[0];
  body.replaceChildren();
  for (const [text, probability] of Object.entries(ext.posterior || {})) {
    const row = body.insertRow();
    row.className = "posterior-row";
    const cell = row.insertCell();
    cell.className = "text";
    cell.textContent = text;
    row.insertCell().textContent = probability.toFixed(4);
  }
  const logMl = ext.log_marginal_likelihood;
  $("log-ml").textContent = logMl === null || logMl === undefined
    ? "log P(constraint): not estimated by this method"
    : `log P(constraint) ≈ ${logMl.toFixed(3)}   (P ≈ ${Math.exp(logMl).toPrecision(3)})`;
  if (ext.message) $("log-ml").textContent += ` — ${ext.message}`;
  $("result").hidden = false;
}

function handle(name, data, chat) {
  if (name === "awrs") { renderStep(data); return; }
  if (data.error) { setStatus(`error: ${data.error.message}`); return; }
  for (const choice of data.choices || []) {
    const piece = chat ? (choice.delta && choice.delta.content) : choice.text;
    if (choice.index === 0 && piece) $("settled").textContent += piece;
  }
  if (data.awrs) renderResult(data.awrs);
}

async function run(event) {
  event.preventDefault();
  let body;
  try { body = requestBody(); } catch (err) { setStatus(`the schema is not valid JSON: ${err.message}`); return; }
  segments = Array.from({ length: body.particles }, () => []);
  $("settled").textContent = "";
  $("particles-table").tBodies[0].replaceChildren();
  $("resamplings").replaceChildren();
  $("result").hidden = true;
  $("step-info").textContent = "";
  $("run").disabled = true;
  setStatus("running…");
  const chat = Boolean(body.messages);
  try {
    const headers = { "Content-Type": "application/json" };
    if ($("api-key").value) headers.Authorization = `Bearer ${$("api-key").value}`;
    const reply = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
      method: "POST", headers, body: JSON.stringify(body),
    });
    if (!reply.ok) {
      const problem = await reply.json().catch(() => ({}));
      setStatus(`error ${reply.status}: ${(problem.error && problem.error.message) || reply.statusText}`);
      return;
    }
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = null;
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data === "[DONE]") { if (!$("status").textContent.startsWith("error")) setStatus("done"); continue; }
        if (data) handle(name, JSON.parse(data), chat);
      }
    }
  } catch (err) {
    setStatus(`error: ${err.message}`);
  } finally {
    $("run").disabled = false;
  }
}

$("kind").addEventListener("change", fillExample);
$("run-form").addEventListener("submit", run);
fillExample();
fetch("/v1/models").then((r) => r.json()).then((m) => { $("model").textContent = m.data[0].id; }).catch(() => {});
