//! Record versions: `epoch << 32 | counter`.
//!
//! Every writer of a session writes under an **epoch** of its own, taken from the durable tier
//! (SQL where there is one, else Redis) when it acquires the session's lease or, without a lease,
//! when it first writes ("claims" the session, see `crate::lease`). No two writers ever get the
//! same epoch of one session, and a later epoch is always higher. Within its epoch a writer
//! counts its writes. So:
//! - **versions never tie**: two writes with the same version would need the same epoch, which
//!   only one writer has, and the same count, which that writer gives out once;
//! - a write of a later epoch is above every write of an earlier one, and the tiers fence a
//!   write whose epoch is below the session's: a writer that lost the session cannot write
//!   under a version that would lose against (or silently overwrite) a newer writer's.
//!
//! Versions written before epochs were part of them are plain counters below 2^32 (epoch 0):
//! every write of epoch 1 or later is above them.

/// Bits of the counter part.
pub const COUNTER_BITS: u32 = 32;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;
/// The highest epoch a version can carry (SQL keeps versions as signed 64-bit integers).
pub const MAX_EPOCH: u64 = (1 << 31) - 1;

/// The epoch part of a version.
pub fn epoch_of(version: u64) -> u64 {
    version >> COUNTER_BITS
}

/// The first version of `epoch`.
pub fn first_of(epoch: u64) -> u64 {
    (epoch << COUNTER_BITS) | 1
}

/// The version after `last` for a writer of `epoch`: the next count in its epoch, or the first
/// of its epoch when `last` belongs to an earlier one. `None` when `last` belongs to a later
/// epoch (a newer writer wrote: this writer is fenced) or the epoch's counter is exhausted.
pub fn next(last: u64, epoch: u64) -> Option<u64> {
    if epoch == 0 || epoch > MAX_EPOCH {
        return None;
    }
    match epoch_of(last).cmp(&epoch) {
        std::cmp::Ordering::Less => Some(first_of(epoch)),
        std::cmp::Ordering::Equal if last & COUNTER_MASK < COUNTER_MASK => Some(last + 1),
        _ => None,
    }
}

/// How many versions are left in `last`'s epoch after it.
pub fn left_in_epoch(last: u64) -> u64 {
    COUNTER_MASK - (last & COUNTER_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_counts_within_its_epoch_and_starts_above_earlier_ones() {
        assert_eq!(next(0, 1), Some(first_of(1)));
        assert_eq!(next(first_of(1), 1), Some(first_of(1) + 1));
        // plain counters of the old format are epoch 0: any epoch is above them
        assert_eq!(next(123_456, 3), Some(first_of(3)));
        assert!(first_of(1) > u32::MAX as u64);
        // a later epoch starts above everything an earlier one wrote
        assert!(first_of(5) > (first_of(4) | COUNTER_MASK) - 1);
        assert_eq!(next(first_of(4) + 99, 5), Some(first_of(5)));
    }

    #[test]
    fn a_writer_whose_epoch_is_behind_gets_no_version() {
        assert_eq!(next(first_of(7), 6), None);
        assert_eq!(next(0, 0), None);
        assert_eq!(next(0, MAX_EPOCH + 1), None);
    }

    #[test]
    fn an_exhausted_epoch_gives_no_more_versions() {
        let last = (9 << COUNTER_BITS) | COUNTER_MASK;
        assert_eq!(next(last, 9), None);
        assert_eq!(left_in_epoch(last), 0);
        assert_eq!(next(last, 10), Some(first_of(10)));
        assert_eq!(left_in_epoch(first_of(10)), COUNTER_MASK - 1);
    }

    #[test]
    fn versions_of_two_writers_never_tie() {
        // two writers of one session have two epochs: every version of one differs from every
        // version of the other, and the later epoch's are all higher
        let (mut a, mut b) = (0u64, 0u64);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            a = next(a, 11).unwrap();
            b = next(b, 12).unwrap();
            assert!(seen.insert(a) && seen.insert(b));
            assert!(b > a);
        }
        assert!(i64::try_from(first_of(MAX_EPOCH) | COUNTER_MASK).is_ok());
    }
}
