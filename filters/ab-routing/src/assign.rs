//! Bucket → variant mapping.
//!
//! A key is hashed into a bucket `0..10000` (see `meshguard_common::hash`).
//! The bucket space is split into one *slot* per variant except the last, in
//! declared order, each slot proportional to that variant's weight among the
//! non-last variants. The last variant takes the tail of every slot, in
//! proportion to its share of the total weight.
//!
//! Why not plain consecutive ranges: with `A=50, B=25, C=25` → `A=[0,5000)
//! B=[5000,7500) C=[7500,10000)`, raising C to 50 would give `A=[0,4000)
//! B=[4000,6000)` and move users from A to B. With slots, the slot sizes
//! depend only on the non-last weights, so raising (or lowering) the last
//! variant's weight only moves users into (or out of) the last variant —
//! ramp-ups are monotonic. Declare the variant you ramp up last.

use meshguard_common::hash::BUCKETS;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    /// First bucket of the slot.
    start: u32,
    /// Buckets `start..start + kept` belong to this slot's variant; the rest
    /// of the slot (up to the next slot's start) belongs to the last variant.
    kept: u32,
    /// One past the slot's last bucket.
    end: u32,
}

/// Precomputed mapping for one experiment's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantTable {
    slots: Vec<Slot>,
    last: usize,
}

impl VariantTable {
    /// `weights` must be non-empty with a positive sum (config validation
    /// guarantees it); otherwise every bucket maps to variant 0.
    pub fn new(weights: &[u32]) -> Self {
        let Some((last_weight, others)) = weights.split_last() else {
            return Self {
                slots: Vec::new(),
                last: 0,
            };
        };
        let rest: u64 = others.iter().map(|w| u64::from(*w)).sum();
        let total = rest + u64::from(*last_weight);
        let buckets = u64::from(BUCKETS);
        let mut slots = Vec::with_capacity(others.len());
        // Division by zero cannot happen (rest > 0 implies total > 0), but
        // checked_div keeps that a local fact instead of a panic path.
        let mut cumulative = 0u64;
        for w in others {
            let (Some(start), Some(end)) = (
                (cumulative * buckets).checked_div(rest),
                ((cumulative + u64::from(*w)) * buckets).checked_div(rest),
            ) else {
                break; // rest == 0: every bucket goes to the last variant
            };
            cumulative += u64::from(*w);
            let kept = ((end - start) * rest).checked_div(total).unwrap_or(0);
            slots.push(Slot {
                start: start as u32,
                kept: kept as u32,
                end: end as u32,
            });
        }
        Self {
            slots,
            last: others.len(),
        }
    }

    /// Variant index for `bucket` (`0..10000`).
    pub fn pick(&self, bucket: u32) -> usize {
        for (i, slot) in self.slots.iter().enumerate() {
            if bucket < slot.end {
                return if bucket.saturating_sub(slot.start) < slot.kept {
                    i
                } else {
                    self.last
                };
            }
        }
        self.last
    }

    /// Number of buckets each variant owns (shares ×10000), for docs and tests.
    pub fn bucket_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.last + 1];
        for b in 0..BUCKETS {
            if let Some(c) = counts.get_mut(self.pick(b)) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_match_weights_exactly_in_buckets() {
        assert_eq!(
            VariantTable::new(&[50, 50]).bucket_counts(),
            vec![5000, 5000]
        );
        assert_eq!(
            VariantTable::new(&[90, 10]).bucket_counts(),
            vec![9000, 1000]
        );
        assert_eq!(
            VariantTable::new(&[1, 1, 1])
                .bucket_counts()
                .iter()
                .sum::<u32>(),
            10_000
        );
        let c = VariantTable::new(&[1, 1, 1]).bucket_counts();
        assert!(c.iter().all(|n| (3332..=3335).contains(n)), "{c:?}");
        assert_eq!(VariantTable::new(&[7]).bucket_counts(), vec![10_000]);
        assert_eq!(
            VariantTable::new(&[0, 0, 5]).bucket_counts(),
            vec![0, 0, 10_000]
        );
        assert_eq!(VariantTable::new(&[5, 0]).bucket_counts(), vec![10_000, 0]);
        assert_eq!(
            VariantTable::new(&[0, 5, 0]).bucket_counts(),
            vec![0, 10_000, 0]
        );
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let c = VariantTable::new(&[u32::MAX, u32::MAX, u32::MAX]).bucket_counts();
        assert_eq!(c.iter().sum::<u32>(), 10_000);
    }

    #[test]
    fn ramping_last_variant_only_moves_users_into_it() {
        // Every bucket, every ramp step, several shapes of non-last weights.
        for others in [
            vec![50u32],
            vec![50, 25],
            vec![10, 20, 30, 40],
            vec![1, 0, 3],
        ] {
            let mut prev: Option<VariantTable> = None;
            for last in [0u32, 1, 5, 10, 25, 50, 99, 100, 1000, 100_000] {
                let mut w = others.clone();
                w.push(last);
                let table = VariantTable::new(&w);
                if let Some(p) = &prev {
                    for b in 0..BUCKETS {
                        let (before, after) = (p.pick(b), table.pick(b));
                        assert!(
                            before == after || after == table.last,
                            "weights {w:?}: bucket {b} moved from {before} to {after}"
                        );
                    }
                }
                prev = Some(table);
            }
        }
    }

    #[test]
    fn ramping_down_last_only_moves_users_out_of_it() {
        let a = VariantTable::new(&[30, 30, 40]);
        let b = VariantTable::new(&[30, 30, 10]);
        for bucket in 0..BUCKETS {
            let (x, y) = (a.pick(bucket), b.pick(bucket));
            assert!(x == y || x == 2, "bucket {bucket}: {x} -> {y}");
        }
    }
}
