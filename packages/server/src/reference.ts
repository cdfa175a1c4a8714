/** Renders the OpenAPI document as one self-contained HTML page: no scripts, no CDN. */

type Json = Record<string, unknown>;

const esc = (s: unknown): string =>
  String(s ?? "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");

/** A one-line type for a schema: `string`, `string | null`, `array of string`, `"a" | "b"`. */
function typeOf(schema: Json | undefined): string {
  if (!schema) return "";
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as Json[]).map(typeOf).join(" | ");
  if ("const" in schema) return JSON.stringify(schema.const);
  if (schema.type === "array") return `array of ${typeOf(schema.items as Json)}`;
  if (schema.type === "object" && schema.patternProperties) return "object of strings";
  return String(schema.type ?? "any");
}

function fields(schema: Json | undefined): string {
  const props = schema?.properties as Record<string, Json> | undefined;
  if (!props) return "";
  const required = new Set((schema?.required as string[] | undefined) ?? []);
  const rows = Object.entries(props)
    .map(
      ([name, p]) =>
        `<tr><td><code>${esc(name)}</code>${required.has(name) ? " <em>required</em>" : ""}</td><td>${esc(typeOf(p))}</td><td>${esc(p.description ?? "")}</td></tr>`,
    )
    .join("");
  return `<table><tr><th>Field</th><th>Type</th><th>Meaning</th></tr>${rows}</table>`;
}

/** The HTML reference page for an OpenAPI 3.1 document built by `buildOpenApi`. */
export function renderReference(doc: Json): string {
  const info = doc.info as Json;
  const paths = doc.paths as Record<string, Record<string, Json>>;
  const byTag = new Map<string, { method: string; path: string; op: Json }[]>();
  for (const [path, methods] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = ((op.tags as string[]) ?? ["Other"])[0]!;
      byTag.set(tag, [...(byTag.get(tag) ?? []), { method, path, op }]);
    }
  }
  const nav = [...byTag.entries()]
    .map(
      ([tag, ops]) =>
        `<h3>${esc(tag)}</h3><ul>${ops.map(({ method, path, op }) => `<li><a href="#${esc(op.operationId)}"><span class="m ${method}">${method.toUpperCase()}</span> ${esc(path)}</a></li>`).join("")}</ul>`,
    )
    .join("");
  const sections = [...byTag.entries()]
    .map(([tag, ops]) => {
      const body = ops
        .map(({ method, path, op }) => {
          const params = ((op.parameters as Json[]) ?? [])
            .map(
              (p) =>
                `<tr><td><code>${esc(p.name)}</code> <small>${esc(p.in)}</small>${p.required ? " <em>required</em>" : ""}</td><td>${esc(typeOf(p.schema as Json))}</td><td>${esc(p.description ?? "")}</td></tr>`,
            )
            .join("");
          const request = (op.requestBody as Json | undefined)?.content as Json | undefined;
          const requestSchema = (request?.["application/json"] as Json | undefined)?.schema as
            | Json
            | undefined;
          const responses = Object.entries(op.responses as Record<string, Json>);
          const success = responses.find(([s]) => s.startsWith("2"));
          const successSchema = ((success?.[1].content as Json)?.["application/json"] as Json | undefined)
            ?.schema as Json | undefined;
          const errors = responses
            .filter(([s]) => !s.startsWith("2"))
            .map(([s, r]) => `<li><b>${esc(s)}</b> ${esc(r.description)}</li>`)
            .join("");
          return `<section id="${esc(op.operationId)}"><h2><span class="m ${method}">${method.toUpperCase()}</span> <code>${esc(path)}</code></h2>
<p><b>${esc(op.summary)}</b>. ${esc(op.description ?? "")}</p><p><small>Access: ${esc(op["x-access"])}</small></p>
${params ? `<h4>Parameters</h4><table><tr><th>Name</th><th>Type</th><th>Meaning</th></tr>${params}</table>` : ""}
${requestSchema ? `<h4>Request body</h4>${fields(requestSchema)}` : ""}
${successSchema ? `<h4>Response ${esc(success?.[0])}</h4>${fields(successSchema) || `<p>${esc(typeOf(successSchema))}</p>`}` : ""}
<h4>Errors</h4><ul>${errors}</ul></section>`;
        })
        .join("");
      return `<h1 class="tag">${esc(tag)}</h1>${body}`;
    })
    .join("");
  const codes = Object.entries(((doc.components as Json)["x-error-codes"] as Record<string, Json>) ?? {})
    .map(
      ([code, e]) =>
        `<tr><td><code>${esc(code)}</code></td><td>${esc(e.status)}</td><td>${esc(e.title)}</td></tr>`,
    )
    .join("");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(info.title)} reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;display:flex;color:#1d2330}
nav{width:300px;flex:none;height:100vh;overflow:auto;position:sticky;top:0;background:#f5f6f8;padding:12px 16px;box-sizing:border-box}
nav ul{list-style:none;padding:0;margin:0 0 8px}nav a{text-decoration:none;color:inherit;font-size:13px}
main{padding:16px 32px;max-width:960px}section{border-top:1px solid #e3e5ea;padding:8px 0}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border:1px solid #e3e5ea;padding:4px 6px;text-align:left;vertical-align:top}
.m{font:bold 11px monospace;padding:1px 5px;border-radius:3px;color:#fff}.get{background:#2f7d32}.post{background:#1f5fbf}
h1.tag{margin-top:32px}code{font-size:13px}
</style></head><body><nav><h2>${esc(info.title)}</h2><p><a href="/v1/openapi.json">openapi.json</a> · <a href="#errors">error codes</a></p>${nav}</nav>
<main><h1>${esc(info.title)} ${esc(info.version)}</h1><p>${esc(info.description)}</p>
<p>Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>. Every POST accepts <code>Idempotency-Key</code>.</p>
${sections}<h1 id="errors">Error codes</h1><p>Every error is <code>application/problem+json</code> with these stable codes.</p>
<table><tr><th>Code</th><th>Status</th><th>Title</th></tr>${codes}</table></main></body></html>`;
}
