// Validates Prometheus Operator objects against the CRD types, as the API server would.
//
// Reads a JSON array of objects on stdin; prints one JSON line per object:
// {"kind", "name", "errors": [...]}; exits 1 if any object is invalid or of a kind this
// script does not know. The schemas come from @kubernetes-models/prometheus-operator,
// generated from the operator's Go API types (field types, enums, patterns such as
// durations, required fields). Those schemas accept unknown fields, as CRDs prune them
// silently: tests/deploy/test_kubernetes.py checks field names separately.
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = { PodMonitor, PrometheusRule, ServiceMonitor };

let input = "";
for await (const chunk of process.stdin) input += chunk;

let failed = false;
for (const object of JSON.parse(input)) {
  const Model = MODELS[object.kind];
  const result = { kind: object.kind, name: object.metadata?.name ?? null, errors: [] };
  if (!Model || object.apiVersion !== Model.apiVersion) {
    result.errors.push(`no schema for ${object.apiVersion} ${object.kind}`);
  } else {
    try {
      new Model(object).validate();
    } catch (error) {
      result.errors.push(String(error.message ?? error));
    }
  }
  if (result.errors.length) failed = true;
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
