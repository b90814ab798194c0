// Aggregation plans by spec (e.g. "fedavg", "trimmedmean:beta=0.1+fedadam"): parsed and validated once,
// then shared by every round that names the same spec.
import { createPlan, type AggregationPlan } from '../strategies/registry.ts';

const plans = new Map<string, AggregationPlan>();

export function planFor(spec: string): AggregationPlan {
  const key = spec.trim() || 'fedavg';
  let plan = plans.get(key);
  if (!plan) {
    plan = createPlan(key);
    plans.set(key, plan);
  }
  return plan;
}
