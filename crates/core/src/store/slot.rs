//! This process's view of one session: whether its Redis copy was checked, the versions it
//! gave out and saw, and its call order (tickets).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;

/// This process's view of one session.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) state: Mutex<SlotState>,
    /// One validation at a time.
    pub(super) gate: tokio::sync::Mutex<()>,
    /// Call-order tickets: writes enter the lane in the order they were called.
    pub(super) tickets: AtomicU64,
    /// The ticket whose turn it is to enter the lane, and later tickets already done.
    pub(super) turn: Mutex<(u64, std::collections::BTreeSet<u64>)>,
    pub(super) turned: tokio::sync::Notify,
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) validated: bool,
    /// The Redis connection's reconnect count at validation: a reconnection (restart, failover)
    /// means checking again.
    pub(super) connection: u64,
    /// The last version given out.
    pub(super) last: u64,
    /// The highest version this process knows Redis applied.
    pub(super) floor: u64,
    /// A Redis step of this session failed after its SQL commit: Redis may lack that write even
    /// if later writes raised its version, so it is rebuilt before it is used again.
    pub(super) suspect: bool,
}

impl Slot {
    pub(super) fn validated(&self, connection: u64) -> bool {
        let s = self.state.lock();
        s.validated && s.connection == connection
    }

    /// Waits until it is `ticket`'s turn to enter the lane.
    pub(super) async fn wait_turn(&self, ticket: u64) {
        loop {
            let turned = self.turned.notified();
            tokio::pin!(turned);
            turned.as_mut().enable();
            if self.turn.lock().0 >= ticket {
                return;
            }
            turned.await;
        }
    }

    /// Lets the next ticket enter the lane.
    pub(super) fn end_turn(&self, ticket: u64) {
        let mut guard = self.turn.lock();
        let (turn, done) = &mut *guard;
        done.insert(ticket);
        while done.remove(turn) {
            *turn += 1;
        }
        drop(guard);
        self.turned.notify_waiters();
    }

    /// The next version for a write of `epoch` (`crate::version::next`); `None` when a writer
    /// of a later epoch wrote (this process saw its version) or the epoch ran out of versions.
    pub(super) fn next_version(&self, epoch: u64) -> Option<u64> {
        let mut s = self.state.lock();
        let v = crate::version::next(s.last, epoch)?;
        s.last = v;
        Some(v)
    }

    pub(super) fn floor(&self) -> u64 {
        self.state.lock().floor
    }

    pub(super) fn raise_floor(&self, v: u64) {
        let mut s = self.state.lock();
        s.floor = s.floor.max(v);
    }

    /// Forgets what this process knew of the session's Redis copy: the next use checks it again.
    pub(super) fn invalidate(&self) {
        self.state.lock().validated = false;
    }

    /// See [`SlotState::suspect`].
    pub(super) fn suspect(&self) {
        let mut s = self.state.lock();
        s.validated = false;
        s.suspect = true;
    }

    pub(super) fn is_suspect(&self) -> bool {
        self.state.lock().suspect
    }
}

/// A place in a session's call order, taken when a write or clear is called (synchronously, so
/// calls from one thread keep their order) and given up once the job entered its lane.
pub struct Ticket {
    pub(super) slot: Arc<Slot>,
    pub(super) n: u64,
    pub(super) ended: bool,
}

impl Ticket {
    pub(super) fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.slot.end_turn(self.n);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_enter_in_the_order_their_tickets_were_taken() {
        let slot = Arc::new(Slot::default());
        let tickets: Vec<u64> = (0..50)
            .map(|_| slot.tickets.fetch_add(1, Ordering::AcqRel))
            .collect();
        let entered = Arc::new(Mutex::new(Vec::new()));
        // spawned in reverse: each still waits for every earlier ticket
        let tasks: Vec<_> = tickets
            .iter()
            .rev()
            .map(|&n| {
                let (slot, entered) = (slot.clone(), entered.clone());
                tokio::spawn(async move {
                    slot.wait_turn(n).await;
                    entered.lock().push(n);
                    slot.end_turn(n);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*entered.lock(), tickets);
    }

    #[test]
    fn a_ticket_given_up_out_of_turn_does_not_block_the_others() {
        let slot = Slot::default();
        slot.end_turn(1); // ticket 1 dropped before ticket 0 entered
        assert_eq!(slot.turn.lock().0, 0);
        slot.end_turn(0);
        assert_eq!(slot.turn.lock().0, 2);
    }

    #[test]
    fn versions_rise_in_lane_order_and_a_writer_behind_gets_none() {
        let slot = Slot::default();
        let a = slot.next_version(3).unwrap();
        let b = slot.next_version(3).unwrap();
        assert!(b > a);
        // another writer's version of a later epoch seen (seeded at validation)
        slot.state.lock().last = crate::version::first_of(5);
        assert_eq!(
            slot.next_version(3),
            None,
            "epoch 3 is behind: fenced, never a lower version"
        );
        let c = slot.next_version(6).unwrap();
        assert!(c > crate::version::first_of(5));
    }
}
