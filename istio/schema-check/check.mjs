// Validates rendered Istio manifests against Istio's CRD schemas
// (@kubernetes-models/istio), after parsing them with an independent YAML
// parser (eemeli/yaml, YAML 1.2 core schema as Kubernetes reads it).
//
//   node check.mjs FILE...        every document in every file must pass
//   node check.mjs --self-test    broken documents must fail (the check can fail)
//
// Prints one line per document; exits 1 if any document fails.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { DestinationRule, VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1";
import { EnvoyFilter } from "@kubernetes-models/istio/networking.istio.io/v1alpha3";
import { WasmPlugin } from "@kubernetes-models/istio/extensions.istio.io/v1alpha1";

const MODELS = {
  "networking.istio.io/v1/DestinationRule": DestinationRule,
  "networking.istio.io/v1/VirtualService": VirtualService,
  "networking.istio.io/v1alpha3/EnvoyFilter": EnvoyFilter,
  "extensions.istio.io/v1alpha1/WasmPlugin": WasmPlugin,
};

function errorsOf(Model, obj) {
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    return e.errors;
  }
}

// Free-form objects (protobuf Struct): pluginConfig, an EnvoyFilter patch's
// value. Their contents are not Istio's schema.
const FREE_FORM = [/^\/spec\/pluginConfig$/, /^\/spec\/configPatches\/\d+\/patch\/value$/];

// The schemas accept unknown fields (the API server prunes them silently,
// `kubectl apply --validate=strict` refuses them). Find them: a field the
// schema knows refuses a value of no JSON type at its own path.
function unknownFields(Model, root) {
  const unknown = [];
  const walk = (node, path) => {
    if (FREE_FORM.some((re) => re.test(path))) return;
    if (Array.isArray(node)) {
      node.forEach((v, i) => walk(v, `${path}/${i}`));
    } else if (node !== null && typeof node === "object") {
      for (const k of Object.keys(node)) {
        const p = `${path}/${k}`;
        const saved = node[k];
        node[k] = Symbol("probe");
        const known = errorsOf(Model, root).some((e) => e.instancePath === p);
        node[k] = saved;
        if (!known) unknown.push(p);
        else walk(saved, p);
      }
    }
  };
  walk(root.spec, "/spec");
  return unknown;
}

// Returns an error message, or null if the document is valid.
function check(obj) {
  if (obj === null || typeof obj !== "object") return "not a mapping";
  const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (!Model) return `no schema for ${obj.apiVersion} ${obj.kind}`;
  const errors = errorsOf(Model, obj);
  if (errors.length) {
    return errors.map((e) => `${e.instancePath} ${e.message}`).join("; ");
  }
  const unknown = unknownFields(Model, structuredClone(obj));
  if (unknown.length) return `fields not in Istio's schema: ${unknown.join(", ")}`;
  return null;
}

function checkText(text, origin) {
  let failed = 0;
  let n = 0;
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) {
      console.log(`FAIL ${origin}: YAML: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    n++;
    const name = `${origin}: ${obj.kind} ${obj.metadata?.namespace}/${obj.metadata?.name}`;
    const err = check(obj);
    if (err) {
      console.log(`FAIL ${name}: ${err}`);
      failed++;
    } else {
      console.log(`ok   ${name}`);
    }
  }
  return { n, failed };
}

if (process.argv[2] === "--self-test") {
  const good = {
    apiVersion: "networking.istio.io/v1", kind: "DestinationRule",
    metadata: { name: "a", namespace: "b" },
    spec: { host: "a", trafficPolicy: { loadBalancer: { simple: "LEAST_REQUEST" } } },
  };
  const bad = [
    ["unknown enum", { ...good, spec: { host: "a", trafficPolicy: { loadBalancer: { simple: "LEAST_CONNS" } } } }],
    ["wrong type", { ...good, spec: { host: "a", trafficPolicy: { connectionPool: { http: { maxRetries: "three" } } } } }],
    ["unknown field", { ...good, spec: { host: "a", trafficPolicy: { outlierDetection: { consecutive5xxErrorz: 3 } } } }],
    ["unknown field in a list", { apiVersion: "networking.istio.io/v1", kind: "VirtualService", metadata: { name: "v" }, spec: { hosts: ["a"], http: [{ route: [{ destination: { host: "a", subnet: "x" } }] }] } }],
    ["WasmPlugin bad sha256", { apiVersion: "extensions.istio.io/v1alpha1", kind: "WasmPlugin", metadata: { name: "w" }, spec: { url: "oci://r/x:1", sha256: "XYZ" } }],
    ["WasmPlugin bad phase", { apiVersion: "extensions.istio.io/v1alpha1", kind: "WasmPlugin", metadata: { name: "w" }, spec: { url: "oci://r/x:1", phase: "ROUTING" } }],
  ];
  let ok = check(good) === null;
  if (!ok) console.log(`FAIL self-test: a valid DestinationRule was refused: ${check(good)}`);
  for (const [what, doc] of bad) {
    const err = check(doc);
    if (err === null) {
      console.log(`FAIL self-test: ${what} passed the schema`);
      ok = false;
    } else {
      console.log(`ok   self-test: ${what} refused: ${err.slice(0, 120)}`);
    }
  }
  process.exit(ok ? 0 : 1);
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node check.mjs FILE... | --self-test");
  process.exit(2);
}
let total = 0;
let failed = 0;
for (const f of files) {
  const r = checkText(readFileSync(f, "utf8"), f);
  total += r.n;
  failed += r.failed;
}
console.log(`${total} documents, ${failed} failed`);
process.exit(failed === 0 && total > 0 ? 0 : 1);
