//! Differentially private answers, for agreements with a `differentialPrivacy` duty.
//!
//! The query is computed exactly at the provider, then every released number gets
//! noise from OpenDP's samplers, calibrated from the duty's ε per query:
//!
//! - the query's ε is split evenly over what it releases: the groups' row counts, and
//!   one clamped sum per summed or averaged column; a person is in one group only, so
//!   the groups of one release share its ε (parallel composition);
//! - counts get discrete Laplace noise of scale 1/ε_share (one person changes a count
//!   by 1);
//! - sums get Laplace noise of scale Δ/ε_share, each value clamped first to the duty's
//!   bounds for its column, Δ the larger magnitude of those bounds (one person moves a
//!   sum by at most Δ); a column without bounds cannot be summed;
//! - `avg` is the noisy sum over the noisy row count, clamped to the bounds (derived,
//!   so it costs nothing more); `min` and `max` are refused: one person can move an
//!   extreme as far as the bounds allow, so a useful noisy extreme would cost ε the
//!   budget cannot pay;
//! - group keys: a group is shown only when its noisy count reaches a threshold set so
//!   that a group of one person shows with probability at most [`DELTA`] (OpenDP's
//!   Laplace stability threshold), and at least the agreement's k. A grouped query is
//!   then (ε, δ)-differentially private with δ = [`DELTA`]; a query without a group-by
//!   has one public group and is ε-differentially private (its noisy count below k
//!   withholds it, which is computed from the noisy count alone).
//!
//! OpenDP's privacy maps check every calibration before anything is sampled, so a
//! mechanism that would spend more than its share is an error, never an answer.

use liutong_policy::{ColumnBounds, Duty, Epsilon};
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{make_laplace, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance, L1Distance};
use std::collections::HashMap;

use super::aggregate::{Answer, Function, Query};

/// δ of a grouped query: the most probability with which a group that one person alone
/// makes can be shown.
pub const DELTA: f64 = 1e-7;

/// The privacy terms of an agreement: the strictest of its `differentialPrivacy`
/// duties (smallest ε per query, smallest budget, narrowest bounds).
#[derive(Clone, Debug, PartialEq)]
pub struct Terms {
    pub epsilon: Epsilon,
    pub budget: Epsilon,
    pub bounds: Vec<ColumnBounds>,
}

/// The terms the duties ask for, `None` when no duty asks for differential privacy.
pub fn terms(duties: &[Duty]) -> Option<Terms> {
    let mut out: Option<Terms> = None;
    for d in duties {
        let Duty::DifferentialPrivacy {
            epsilon,
            budget,
            bounds,
        } = d
        else {
            continue;
        };
        let Some(t) = out.as_mut() else {
            out = Some(Terms {
                epsilon: *epsilon,
                budget: *budget,
                bounds: bounds.clone(),
            });
            continue;
        };
        t.epsilon = t.epsilon.min(*epsilon);
        t.budget = t.budget.min(*budget);
        for b in bounds {
            match t.bounds.iter_mut().find(|x| x.column == b.column) {
                // Two duties bound one column: the values must lie within both.
                Some(x) => {
                    x.lower = x.lower.max(b.lower);
                    x.upper = x.upper.min(b.upper);
                }
                None => t.bounds.push(b.clone()),
            }
        }
    }
    out
}

/// Why a query cannot be answered with differential privacy; the message says what
/// to ask instead.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DpError {
    #[error("{0}")]
    Unsupported(String),
    #[error("the noise could not be drawn: {0}")]
    Noise(String),
}

fn noise_err(e: opendp::error::Error) -> DpError {
    DpError::Noise(e.to_string())
}

/// How one query's noise is calibrated ([`Plan::for_query`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// ε of the whole query.
    pub epsilon: f64,
    /// ε of each release (the count, each sum).
    pub share: f64,
    /// Scale of the discrete Laplace noise on counts.
    pub count_scale: f64,
    /// The noisy count a group needs to be shown: at least k, and for a group-by the
    /// stability threshold (`i64::MIN` for a total without a minimum group size).
    pub threshold: i64,
    /// Whether keys come from the data (a group-by) and so cost δ.
    pub grouped: bool,
    /// Per aggregation: for `sum` and `avg` the clamping bounds and the noise scale.
    pub sums: Vec<Option<SumPlan>>,
}

/// The clamping and noise of one summed column.
#[derive(Clone, Debug, PartialEq)]
pub struct SumPlan {
    pub lower: f64,
    pub upper: f64,
    pub scale: f64,
}

impl Plan {
    /// Calibrates the noise of `query` under `terms`, with minimum group size `k`;
    /// refuses what cannot be answered with differential privacy.
    pub fn for_query(query: &Query, terms: &Terms, k: u32) -> Result<Plan, DpError> {
        let mut summed: Vec<&str> = Vec::new();
        for a in &query.aggregations {
            match (a.function, a.column.as_deref()) {
                (Function::Min | Function::Max, _) => {
                    return Err(DpError::Unsupported(format!(
                        "{} is not answered under differential privacy: one person can move \
                         an extreme as far as the bounds allow, so no useful noise hides them; \
                         ask for avg, sum or a count with a filter",
                        a.function.as_str()
                    )));
                }
                (Function::Sum | Function::Avg, Some(c)) => {
                    if !terms.bounds.iter().any(|b| b.column == c) {
                        return Err(DpError::Unsupported(format!(
                            "{a} needs bounds for column {c:?} in the agreement's \
                             differentialPrivacy duty (bounds = [{{ column = {c:?}, lower = …, \
                             upper = … }}]); without them one person could move the sum \
                             without limit"
                        )));
                    }
                    if !summed.contains(&c) {
                        summed.push(c);
                    }
                }
                _ => {}
            }
        }
        let epsilon = terms.epsilon.value();
        // The counts are always released (a group's rows), then one sum per column.
        let share = epsilon / (1 + summed.len()) as f64;
        let count_scale = 1.0 / share;
        let grouped = !query.group_by.is_empty();
        let threshold = if grouped {
            stability_threshold(count_scale, share)?.max(i64::from(k))
        } else if k > 1 {
            i64::from(k)
        } else {
            // The one group of a total is public: shown whatever its noisy count.
            i64::MIN
        };
        let mut sums = Vec::with_capacity(query.aggregations.len());
        for a in &query.aggregations {
            let plan = match (a.function, a.column.as_deref()) {
                (Function::Sum | Function::Avg, Some(c)) => {
                    let b = terms
                        .bounds
                        .iter()
                        .find(|b| b.column == c)
                        .expect("checked above");
                    if b.lower >= b.upper {
                        return Err(DpError::Unsupported(format!(
                            "the agreement's differentialPrivacy duties bound column {c:?} to \
                             ranges that do not overlap, so it cannot be summed"
                        )));
                    }
                    Some(SumPlan {
                        // Bounds lie within ±2^40 (checked by the policy), exact in f64.
                        lower: b.lower as f64,
                        upper: b.upper as f64,
                        scale: b.sensitivity() as f64 / share,
                    })
                }
                _ => None,
            };
            sums.push(plan);
        }
        Ok(Plan {
            epsilon,
            share,
            count_scale,
            threshold,
            grouped,
            sums,
        })
    }

    /// The clamping bounds of each aggregation, for the engine.
    pub fn clamps(&self) -> Vec<Option<(f64, f64)>> {
        self.sums
            .iter()
            .map(|s| s.as_ref().map(|s| (s.lower, s.upper)))
            .collect()
    }

    /// δ this query spends.
    pub fn delta(&self) -> f64 {
        if self.grouped { DELTA } else { 0.0 }
    }

    /// The query the engine runs: each `avg` as its clamped sum, which the release
    /// divides by the noisy count.
    pub fn engine_query(query: &Query) -> Query {
        let mut q = query.clone();
        for a in &mut q.aggregations {
            if a.function == Function::Avg {
                a.function = Function::Sum;
            }
        }
        q
    }

    /// Replaces the exact answer's numbers with noisy ones, and withholds groups whose
    /// noisy count is below the threshold. `exact` must be the answer to
    /// [`Plan::engine_query`] computed with k = 1 and the clamps of [`Plan::clamps`], so
    /// that it holds every group and clamped sums.
    pub fn release(&self, query: &Query, exact: Answer) -> Result<Answer, DpError> {
        let counts: Vec<i64> = exact
            .groups
            .iter()
            .map(|g| i64::try_from(g.rows).unwrap_or(i64::MAX))
            .collect();
        let noisy_counts: Vec<Option<i64>> = if self.grouped {
            thresholded_counts(&counts, self.count_scale, self.threshold, self.share)?
        } else {
            // One group, the same whatever the rows: never withheld for being absent.
            let count = counts.first().copied().unwrap_or(0);
            let noisy = noisy_count(count, self.count_scale, self.share)?;
            vec![(noisy >= self.threshold).then_some(noisy)]
        };
        let mut groups = Vec::new();
        // Without a group-by the engine has no group when no row passed the filters;
        // the release is the same noisy total either way.
        let exact_groups = if exact.groups.is_empty() && !self.grouped {
            vec![super::aggregate::Group {
                keys: Vec::new(),
                rows: 0,
                values: vec![None; query.aggregations.len()],
            }]
        } else {
            exact.groups
        };
        let shown: Vec<_> = exact_groups
            .into_iter()
            .zip(noisy_counts)
            .filter_map(|(g, c)| c.map(|c| (g, c)))
            .collect();
        // One noisy vector per summed column, over the shown groups, shared by that
        // column's sum and avg: the ε split counted one release per column (one person
        // changes one group's sum by at most Δ: L1 sensitivity Δ).
        let mut drawn: Vec<(&str, Vec<f64>)> = Vec::new();
        let mut sum_of: Vec<Option<usize>> = Vec::with_capacity(self.sums.len());
        for (i, (a, plan)) in query.aggregations.iter().zip(&self.sums).enumerate() {
            let (Some(p), Some(c)) = (plan, a.column.as_deref()) else {
                sum_of.push(None);
                continue;
            };
            if let Some(j) = drawn.iter().position(|(d, _)| *d == c) {
                sum_of.push(Some(j));
                continue;
            }
            let exact: Vec<f64> = shown
                .iter()
                .map(|(g, _)| g.values.get(i).copied().flatten().unwrap_or(0.0))
                .collect();
            drawn.push((c, noisy_vector(&exact, p, self.share)?));
            sum_of.push(Some(drawn.len() - 1));
        }
        for (n, (g, count)) in shown.into_iter().enumerate() {
            let rows = u64::try_from(count.max(0)).unwrap_or(0);
            let values = query
                .aggregations
                .iter()
                .zip(&self.sums)
                .zip(&sum_of)
                .map(|((a, plan), at)| {
                    let sum = at.map(|j| drawn[j].1[n]);
                    match (a.function, plan, sum) {
                        (Function::Count, _, _) => Some(count.max(0) as f64),
                        (Function::Sum, _, Some(s)) => Some(s),
                        (Function::Avg, Some(p), Some(s)) => {
                            Some((s / count.max(1) as f64).clamp(p.lower, p.upper))
                        }
                        _ => None,
                    }
                })
                .collect();
            groups.push(super::aggregate::Group {
                keys: g.keys,
                rows,
                values,
            });
        }
        Ok(Answer {
            // Every filtered or grouped query may withhold; so may a total whose noisy
            // count fell below k.
            may_be_withheld: exact.may_be_withheld || groups.is_empty(),
            groups,
            rows_read: exact.rows_read,
        })
    }
}

/// Tolerance of the privacy-map checks: OpenDP rounds its maps upwards.
const SLACK: f64 = 1e-9;

/// The smallest count threshold at which OpenDP's Laplace stability mechanism, with
/// noise `scale`, shows a group of one person with probability at most [`DELTA`],
/// checked with its privacy map.
fn stability_threshold(scale: f64, share: f64) -> Result<i64, DpError> {
    // The tail bound for a group of one: 1 + scale · ln(1 / (2δ)).
    let mut threshold = (1.0 + scale * (1.0 / (2.0 * DELTA)).ln()).ceil() as i64;
    // A few steps up at most: the estimate is the bound OpenDP's map uses.
    for _ in 0..64 {
        let (epsilon, delta) = threshold_mechanism(scale, threshold)?
            .map(&(1, 1, 1))
            .map_err(noise_err)?;
        if delta <= DELTA && epsilon <= share * (1.0 + SLACK) {
            return Ok(threshold);
        }
        threshold += 1 + threshold / 16;
    }
    Err(DpError::Noise(format!(
        "no count threshold reaches δ = {DELTA} with noise scale {scale}"
    )))
}

type CountMap = MapDomain<AtomDomain<u64>, AtomDomain<i64>>;
/// OpenDP's Laplace stability mechanism over group counts (keyed by position).
type ThresholdMeasurement = opendp::core::Measurement<
    CountMap,
    L0PInfDistance<1, AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<u64, i64>,
>;

fn threshold_mechanism(scale: f64, threshold: i64) -> Result<ThresholdMeasurement, DpError> {
    make_laplace_threshold(
        MapDomain::new(AtomDomain::<u64>::default(), AtomDomain::<i64>::default()),
        L0PInfDistance(AbsoluteDistance::<i64>::default()),
        scale,
        threshold,
        None,
    )
    .map_err(noise_err)
}

/// Noisy counts of the groups (`None`: withheld), by OpenDP's Laplace stability
/// mechanism: discrete Laplace noise of `scale`, and only counts at or above
/// `threshold` kept.
pub fn thresholded_counts(
    counts: &[i64],
    scale: f64,
    threshold: i64,
    share: f64,
) -> Result<Vec<Option<i64>>, DpError> {
    let m = threshold_mechanism(scale, threshold)?;
    // One person is in one group and changes its count by one.
    let (epsilon, delta) = m.map(&(1, 1, 1)).map_err(noise_err)?;
    if epsilon > share * (1.0 + SLACK) || delta > DELTA * (1.0 + SLACK) {
        return Err(DpError::Noise(format!(
            "the counts would cost ε = {epsilon}, δ = {delta}, more than ε = {share}, δ = {DELTA}"
        )));
    }
    // Keys are positions, so the mechanism sees no group's name.
    let data: HashMap<u64, i64> = (0u64..).zip(counts.iter().copied()).collect();
    let released = m.invoke(&data).map_err(noise_err)?;
    Ok((0u64..counts.len() as u64)
        .map(|i| released.get(&i).copied())
        .collect())
}

/// One count with discrete Laplace noise of `scale` (OpenDP).
pub fn noisy_count(count: i64, scale: f64, share: f64) -> Result<i64, DpError> {
    let m = make_laplace(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        scale,
        None,
    )
    .map_err(noise_err)?;
    let epsilon: f64 = m.map(&1).map_err(noise_err)?;
    if epsilon > share * (1.0 + SLACK) {
        return Err(DpError::Noise(format!(
            "the count would cost ε = {epsilon}, more than {share}"
        )));
    }
    m.invoke(&count).map_err(noise_err)
}

/// Clamped sums, one per group, with Laplace noise of the plan's scale (OpenDP); their
/// L1 sensitivity is the plan's Δ.
pub fn noisy_vector(sums: &[f64], plan: &SumPlan, share: f64) -> Result<Vec<f64>, DpError> {
    let m = make_laplace(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L1Distance::<f64>::default(),
        plan.scale,
        None,
    )
    .map_err(noise_err)?;
    let sensitivity = plan.lower.abs().max(plan.upper.abs());
    let epsilon: f64 = m.map(&sensitivity).map_err(noise_err)?;
    if epsilon > share * (1.0 + SLACK) {
        return Err(DpError::Noise(format!(
            "the sum would cost ε = {epsilon}, more than {share}"
        )));
    }
    m.invoke(&sums.to_vec()).map_err(noise_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::aggregate::{Aggregation, Filter, FilterOp, run_csv_clamped};

    fn terms(epsilon: u32) -> Terms {
        Terms {
            epsilon: Epsilon::from_millis(epsilon),
            budget: Epsilon::from_millis(epsilon * 10),
            bounds: vec![ColumnBounds {
                column: "income".into(),
                lower: -100,
                upper: 10_000,
            }],
        }
    }

    fn agg(function: Function, column: Option<&str>) -> Aggregation {
        Aggregation {
            function,
            column: column.map(String::from),
        }
    }

    fn query(aggregations: Vec<Aggregation>, group_by: &[&str]) -> Query {
        Query {
            aggregations,
            group_by: group_by.iter().map(|c| c.to_string()).collect(),
            filters: vec![],
        }
    }

    #[test]
    fn epsilon_is_split_over_the_releases_and_scales_follow_it() {
        // count, sum and avg of one column: two releases (counts, income's sum).
        let q = query(
            vec![
                agg(Function::Count, None),
                agg(Function::Sum, Some("income")),
                agg(Function::Avg, Some("income")),
            ],
            &[],
        );
        let p = Plan::for_query(&q, &terms(1000), 5).unwrap();
        assert_eq!((p.epsilon, p.share, p.count_scale), (1.0, 0.5, 2.0));
        assert_eq!((p.threshold, p.grouped, p.delta()), (5, false, 0.0));
        let p1 = Plan::for_query(&q, &terms(1000), 1).unwrap();
        assert_eq!(p1.threshold, i64::MIN, "a total is always shown");
        let sum = SumPlan {
            lower: -100.0,
            upper: 10_000.0,
            // Δ = 10 000 (the larger magnitude), over ε = 0.5.
            scale: 20_000.0,
        };
        assert_eq!(p.sums, vec![None, Some(sum.clone()), Some(sum)]);
        assert_eq!(
            p.clamps(),
            vec![None, Some((-100.0, 10_000.0)), Some((-100.0, 10_000.0))]
        );
        // A count alone has the whole ε.
        let p = Plan::for_query(
            &query(vec![agg(Function::Count, None)], &[]),
            &terms(1000),
            1,
        )
        .unwrap();
        assert_eq!(p.share, 1.0);
    }

    #[test]
    fn grouped_counts_need_the_stability_threshold() {
        let q = query(vec![agg(Function::Count, None)], &["district"]);
        let p = Plan::for_query(&q, &terms(1000), 2).unwrap();
        assert!(p.grouped);
        assert_eq!(p.delta(), DELTA);
        // 1 + ln(1 / 2δ) ≈ 16.4 at scale 1; OpenDP's map confirms it.
        assert!((17..=20).contains(&p.threshold), "{}", p.threshold);
        let (epsilon, delta) = threshold_mechanism(1.0, p.threshold)
            .unwrap()
            .map(&(1, 1, 1))
            .unwrap();
        assert!(epsilon <= 1.0 + 1e-9 && delta <= DELTA, "{epsilon} {delta}");
        // A lower threshold would cost more than δ.
        let (_, delta) = threshold_mechanism(1.0, p.threshold - 3)
            .unwrap()
            .map(&(1, 1, 1))
            .unwrap();
        assert!(delta > DELTA, "{delta}");
        // k above the stability threshold wins.
        let p = Plan::for_query(&q, &terms(1000), 500).unwrap();
        assert_eq!(p.threshold, 500);
    }

    #[test]
    fn extremes_and_unbounded_sums_are_refused() {
        for f in [Function::Min, Function::Max] {
            let e = Plan::for_query(&query(vec![agg(f, Some("income"))], &[]), &terms(1000), 1)
                .unwrap_err();
            assert!(e.to_string().contains("is not answered"), "{e}");
        }
        let e = Plan::for_query(
            &query(vec![agg(Function::Avg, Some("age"))], &[]),
            &terms(1000),
            1,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("needs bounds for column \"age\""),
            "{e}"
        );
    }

    #[test]
    fn the_strictest_duty_wins() {
        let duty = |epsilon: u32, budget: u32, lower: i64, upper: i64| Duty::DifferentialPrivacy {
            epsilon: Epsilon::from_millis(epsilon),
            budget: Epsilon::from_millis(budget),
            bounds: vec![ColumnBounds {
                column: "income".into(),
                lower,
                upper,
            }],
        };
        let t =
            super::terms(&[Duty::Log, duty(500, 9000, 0, 100), duty(800, 4000, 10, 500)]).unwrap();
        assert_eq!((t.epsilon.millis(), t.budget.millis()), (500, 4000));
        assert_eq!((t.bounds[0].lower, t.bounds[0].upper), (10, 100));
        assert_eq!(super::terms(&[Duty::Log]), None);
    }

    /// The noise is there and has the calibrated spread: the mean absolute error of
    /// Laplace noise is its scale (loose bounds, a few thousand draws: many standard
    /// errors wide).
    #[test]
    fn noise_has_the_calibrated_spread() {
        let draws = 4000;
        let counts: Vec<i64> = (0..draws)
            .map(|_| noisy_count(1000, 4.0, 0.25).unwrap() - 1000)
            .collect();
        let mean_abs = counts.iter().map(|x| x.unsigned_abs() as f64).sum::<f64>() / draws as f64;
        assert!((3.0..5.0).contains(&mean_abs), "{mean_abs}");
        assert!(counts.iter().any(|x| *x != 0));

        let plan = SumPlan {
            lower: 0.0,
            upper: 100.0,
            scale: 200.0,
        };
        let sums = noisy_vector(&vec![5000.0; draws], &plan, 0.5).unwrap();
        let mean_abs = sums.iter().map(|x| (x - 5000.0).abs()).sum::<f64>() / draws as f64;
        assert!((160.0..240.0).contains(&mean_abs), "{mean_abs}");
        // Noise too small for its share is refused, never drawn.
        let thin = SumPlan {
            scale: 50.0,
            ..plan
        };
        assert!(noisy_vector(&[1.0], &thin, 0.5).is_err());
        assert!(noisy_count(1, 0.5, 1.0).is_err());
    }

    #[test]
    fn large_groups_show_and_single_people_do_not() {
        let shown = thresholded_counts(&[1, 1, 500, 1, 2_000], 1.0, 20, 1.0).unwrap();
        assert_eq!(shown.iter().filter(|c| c.is_some()).count(), 2, "{shown:?}");
        assert!(shown[2].is_some() && shown[4].is_some());
        assert!((450..550).contains(&shown[2].unwrap()));
    }

    #[test]
    fn release_clamps_sums_and_adds_noise() {
        let data = "name,income\na,5\nb,1000000\nc,7\n";
        let q = Query {
            aggregations: vec![
                agg(Function::Count, None),
                agg(Function::Sum, Some("income")),
                agg(Function::Avg, Some("income")),
            ],
            group_by: vec![],
            filters: vec![Filter {
                column: "name".into(),
                op: FilterOp::Gteq,
                value: "a".into(),
            }],
        };
        let p = Plan::for_query(&q, &terms(10_000), 1).unwrap();
        let engine = Plan::engine_query(&q);
        let exact = run_csv_clamped(&engine, 1, None, &p.clamps(), data.as_bytes()).unwrap();
        // b's income counts as the upper bound; avg is computed as the sum.
        assert_eq!(exact.groups[0].values[1], Some(10_012.0));
        assert_eq!(exact.groups[0].values[2], Some(10_012.0));
        let noisy = p.release(&q, exact.clone()).unwrap();
        let g = &noisy.groups[0];
        assert_ne!(g.values[1], Some(10_012.0), "the sum carries noise");
        assert_eq!(g.values[0], Some(g.rows as f64), "count is the noisy rows");
        // One noisy sum per column: avg is that sum over the noisy count, so the
        // column's ε is spent once.
        let (sum, count) = (g.values[1].unwrap(), g.rows.max(1) as f64);
        assert_eq!(g.values[2], Some((sum / count).clamp(-100.0, 10_000.0)));
        assert!(noisy.may_be_withheld);
        // A filter matching no row still answers a noisy total.
        let none = Query {
            filters: vec![Filter {
                column: "name".into(),
                op: FilterOp::Eq,
                value: "nobody".into(),
            }],
            ..q.clone()
        };
        let exact = run_csv_clamped(
            &Plan::engine_query(&none),
            1,
            None,
            &p.clamps(),
            data.as_bytes(),
        )
        .unwrap();
        assert!(exact.groups.is_empty());
        let noisy = p.release(&none, exact).unwrap();
        assert_eq!(noisy.groups.len(), 1, "the same shape as a match");
        assert_ne!(
            noisy.groups[0].values[1],
            Some(0.0),
            "the empty sum is noisy too"
        );
    }
}
