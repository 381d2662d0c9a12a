/**
 * The policies the benchmark runs. The shipped policy (config/policy.yaml) requires a care
 * relationship for some data sets, the clinician's treatment reads among them: a token without a
 * `fhirUser` claim then reaches no patient (403 relationship-required). The rows that measure
 * everything else run a copy of it without `dataSets.*.relationship` (the `relationships` section,
 * unused then, is kept); the `relationship` group runs the shipped file with a caller the bench
 * upstream relates to its patient (lib/payloads.mjs BENCH_PRACTITIONER).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { isMap, parseDocument } from 'yaml';

/**
 * The policy text without any data set's `relationship` requirement, and the names of the data
 * sets it was removed from. Throws when the text is not YAML.
 */
export function withoutRelationshipRequirements(text) {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new Error(`policy is not YAML: ${doc.errors[0].message}`);
  const dataSets = doc.get('dataSets');
  const removed = [];
  if (isMap(dataSets)) {
    for (const item of dataSets.items) {
      const name = String(item.key?.value ?? item.key);
      if (isMap(item.value) && item.value.has('relationship')) {
        item.value.delete('relationship');
        removed.push(name);
      }
    }
  }
  return { text: removed.length > 0 ? doc.toString({ lineWidth: 0, flowCollectionPadding: false }) : text, removed };
}

/** Writes `policyFile` without its relationship requirements to `outFile`; returns the data sets they were removed from. */
export function writePolicyWithoutRelationships(policyFile, outFile) {
  const { text, removed } = withoutRelationshipRequirements(readFileSync(policyFile, 'utf8'));
  writeFileSync(outFile, text);
  return removed;
}
