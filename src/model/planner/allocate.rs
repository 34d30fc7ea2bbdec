//! The choice: a type per free tensor whose costs fit the budget with the
//! least total error (a multiple-choice knapsack).

use super::Options;

/// The least-error choice (index into each tensor's options) whose costs
/// sum to at most `budget`, or None when even the cheapest do not fit: the
/// better of an exact knapsack on costs rounded up to units of the budget
/// and the greedy search on convex hulls, each then completed by single
/// changes that still fit.
pub(super) fn allocate(items: &[Options], budget: u64) -> Option<Vec<usize>> {
    let greedy = allocate_greedy(items, budget)?;
    let err = |p: &[usize]| -> f64 { items.iter().zip(p).map(|(o, &j)| o.opts[j].error).sum() };
    match allocate_knapsack(items, budget) {
        Some(k) if err(&k) < err(&greedy) => Some(k),
        _ => Some(greedy),
    }
}

/// Multiple-choice knapsack by dynamic programming over the budget in at
/// most 2^15 units (costs rounded up, so the result fits), memory bounded
/// to 64 MiB of choices.
fn allocate_knapsack(items: &[Options], budget: u64) -> Option<Vec<usize>> {
    let n = items.len();
    if n == 0 {
        return Some(Vec::new());
    }
    let units = (1usize << 15).min((1usize << 26) / n).max(64);
    let unit = budget.div_ceil(units as u64).max(1);
    let cap = (budget / unit) as usize;
    let cost = |c: u64| c.div_ceil(unit) as usize;
    const NONE: u8 = u8::MAX;
    let mut best = vec![f64::INFINITY; cap + 1];
    best[0] = 0.0;
    let mut choice = vec![NONE; n * (cap + 1)];
    for (i, o) in items.iter().enumerate() {
        let mut next = vec![f64::INFINITY; cap + 1];
        let row = &mut choice[i * (cap + 1)..(i + 1) * (cap + 1)];
        for (j, opt) in o.opts.iter().enumerate().take(NONE as usize) {
            let c = cost(opt.cost);
            for u in c..=cap {
                let e = best[u - c] + opt.error;
                if e < next[u] {
                    next[u] = e;
                    row[u] = j as u8;
                }
            }
        }
        best = next;
    }
    let (mut u, _) = best
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .min_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))?;
    let mut pick = vec![0usize; n];
    for i in (0..n).rev() {
        let j = choice[i * (cap + 1) + u];
        if j == NONE {
            return None;
        }
        pick[i] = j as usize;
        u -= cost(items[i].opts[pick[i]].cost);
    }
    let used: u64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].cost).sum();
    improve(items, budget, &mut pick, used);
    Some(pick)
}

/// Greedy upgrades on each item's lower convex hull, the most error saved
/// per byte first, while they fit.
fn allocate_greedy(items: &[Options], budget: u64) -> Option<Vec<usize>> {
    // Cheapest option of each (lowest error among equal costs).
    let mut pick: Vec<usize> = items
        .iter()
        .map(|o| {
            (0..o.opts.len())
                .min_by(|&a, &b| {
                    (o.opts[a].cost, o.opts[a].error)
                        .partial_cmp(&(o.opts[b].cost, o.opts[b].error))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0)
        })
        .collect();
    let mut used: u64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].cost).sum();
    if used > budget {
        return None;
    }
    // Lower convex hulls of (cost, error) from the cheapest option.
    let hulls: Vec<Vec<usize>> = items.iter().zip(&pick).map(|(o, &j)| hull(o, j)).collect();
    let mut at: Vec<usize> = vec![0; items.len()];
    // Greedy on the hulls: the best error saved per byte first.
    let slope = |i: usize, k: usize| -> Option<f64> {
        let h = &hulls[i];
        let (a, b) = (&items[i].opts[h[k]], &items[i].opts[*h.get(k + 1)?]);
        Some((a.error - b.error) / (b.cost - a.cost).max(1) as f64)
    };
    let mut active: Vec<usize> = (0..items.len()).filter(|&i| hulls[i].len() > 1).collect();
    while !active.is_empty() {
        let (pos, &i) = active
            .iter()
            .enumerate()
            .max_by(|a, b| {
                slope(*a.1, at[*a.1])
                    .partial_cmp(&slope(*b.1, at[*b.1]))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .expect("not empty");
        let h = &hulls[i];
        let (from, to) = (&items[i].opts[h[at[i]]], &items[i].opts[h[at[i] + 1]]);
        let extra = to.cost - from.cost;
        if used + extra <= budget {
            used += extra;
            at[i] += 1;
            pick[i] = h[at[i]];
            if at[i] + 1 >= h.len() {
                active.swap_remove(pos);
            }
        } else {
            active.swap_remove(pos);
        }
    }
    improve(items, budget, &mut pick, used);
    Some(pick)
}

/// Any single change that fits and lowers the error, the largest gain
/// first, until none is left. `used`: the cost of `pick`.
fn improve(items: &[Options], budget: u64, pick: &mut [usize], mut used: u64) {
    loop {
        let mut best: Option<(usize, usize, f64)> = None;
        for (i, o) in items.iter().enumerate() {
            let cur = &o.opts[pick[i]];
            for (j, c) in o.opts.iter().enumerate() {
                if c.error < cur.error && used - cur.cost + c.cost <= budget {
                    let gain = cur.error - c.error;
                    if best.map_or(true, |b| gain > b.2) {
                        best = Some((i, j, gain));
                    }
                }
            }
        }
        let Some((i, j, _)) = best else { break };
        used = used - items[i].opts[pick[i]].cost + items[i].opts[j].cost;
        pick[i] = j;
    }
}

/// The lower convex hull of an item's (cost, error) points from `start`:
/// indices with strictly rising cost and falling error, convex.
fn hull(o: &Options, start: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..o.opts.len())
        .filter(|&j| {
            o.opts[j].cost >= o.opts[start].cost && o.opts[j].error < o.opts[start].error
                || j == start
        })
        .collect();
    idx.sort_by(|&a, &b| {
        (o.opts[a].cost, o.opts[a].error)
            .partial_cmp(&(o.opts[b].cost, o.opts[b].error))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut h: Vec<usize> = Vec::new();
    for j in idx {
        let p = (o.opts[j].cost as f64, o.opts[j].error);
        if let Some(&last) = h.last() {
            // Same cost or no lower error: not on the hull.
            if o.opts[last].cost == o.opts[j].cost || o.opts[j].error >= o.opts[last].error {
                continue;
            }
        }
        while h.len() >= 2 {
            let a = &o.opts[h[h.len() - 2]];
            let b = &o.opts[h[h.len() - 1]];
            let (ax, ay, bx, by) = (a.cost as f64, a.error, b.cost as f64, b.error);
            // b is above the segment a → p: drop it.
            if (by - ay) * (p.0 - ax) >= (p.1 - ay) * (bx - ax) {
                h.pop();
            } else {
                break;
            }
        }
        h.push(j);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::super::Opt;
    use super::*;

    /// A small deterministic generator.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Random tensors with options of rising cost and (mostly) falling
    /// error, some dominated.
    fn instance(seed: u64, n: usize) -> Vec<Options> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                let k = 2 + (next(&mut s) % 4) as usize;
                let mut c = 10 + next(&mut s) % 50;
                let mut e = 1.0 + (next(&mut s) % 1000) as f64 / 100.0;
                let opts = (0..k)
                    .map(|j| {
                        let o = Opt {
                            ty: j as i32,
                            cost: c,
                            error: e,
                        };
                        c += 1 + next(&mut s) % 40;
                        // now and then an option that saves nothing
                        if next(&mut s) % 5 != 0 {
                            e *= 0.1 + (next(&mut s) % 80) as f64 / 100.0;
                        }
                        o
                    })
                    .collect();
                Options { opts }
            })
            .collect()
    }

    fn brute(items: &[Options], budget: u64) -> f64 {
        let mut best = f64::INFINITY;
        let mut idx = vec![0usize; items.len()];
        loop {
            let cost: u64 = items.iter().zip(&idx).map(|(o, &j)| o.opts[j].cost).sum();
            if cost <= budget {
                let err: f64 = items.iter().zip(&idx).map(|(o, &j)| o.opts[j].error).sum();
                best = best.min(err);
            }
            let mut k = 0;
            loop {
                if k == idx.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < items[k].opts.len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    #[test]
    fn allocation_fits_and_reaches_the_exhaustive_optimum() {
        let mut worst = 1.0f64;
        for seed in 1..200u64 {
            let inst = instance(seed, 5);
            let items = &inst[..];
            let least: u64 = items.iter().map(|o| o.opts[0].cost).sum();
            let most: u64 = items.iter().map(|o| o.opts.last().unwrap().cost).sum();
            assert!(allocate(items, least - 1).is_none(), "below the least plan");
            for frac in [0.0, 0.2, 0.5, 0.8, 1.0] {
                let budget = least + ((most - least) as f64 * frac) as u64;
                let pick = allocate(items, budget).expect("the least plan fits");
                let cost: u64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].cost).sum();
                assert!(cost <= budget, "seed {seed}: {cost} > {budget}");
                let err: f64 = items.iter().zip(&pick).map(|(o, &j)| o.opts[j].error).sum();
                let opt = brute(items, budget);
                assert!(err >= opt - 1e-12);
                worst = worst.max(err / opt);
            }
        }
        // The knapsack on rounded costs: at the optimum here (units far
        // smaller than the costs).
        assert!(worst < 1.0 + 1e-9, "worst ratio to the optimum {worst}");
    }

    #[test]
    fn hull_is_convex_and_falling() {
        for seed in 1..100u64 {
            for o in instance(seed, 3) {
                let h = hull(&o, 0);
                assert_eq!(h[0], 0);
                for w in h.windows(2) {
                    assert!(o.opts[w[1]].cost > o.opts[w[0]].cost);
                    assert!(o.opts[w[1]].error < o.opts[w[0]].error);
                }
                for w in h.windows(3) {
                    let s1 = (o.opts[w[0]].error - o.opts[w[1]].error)
                        / (o.opts[w[1]].cost - o.opts[w[0]].cost) as f64;
                    let s2 = (o.opts[w[1]].error - o.opts[w[2]].error)
                        / (o.opts[w[2]].cost - o.opts[w[1]].cost) as f64;
                    assert!(s1 > s2, "slopes must fall: {s1} {s2}");
                }
            }
        }
    }
}
