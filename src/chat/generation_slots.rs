//! A bound on answers generated at once. An answer takes a slot after `chat:stream:start`,
//! before its context is read, and gives it back when its text is complete; the others wait
//! in order of arrival.
//!
//! Why: when generation is work on the server's own cores (the offline engine at full speed),
//! every answer generated at once adds to the queue that the next message's ack waits in (its
//! socket read, its insert, the ack's write). Bounded, the wait moves after
//! `chat:stream:start`, to the first token, which is where a model's queue shows anyway
//! (docs/benchmarks.md has what it gains in ack latency and costs in throughput).

use tokio::sync::{Semaphore, SemaphorePermit};

/// Slots for answers being generated; unbounded when built with `None`.
#[derive(Debug)]
pub struct GenerationSlots {
    slots: Option<Semaphore>,
}

/// Counts an answer in `postchat_answers_waiting` while it waits, however the wait ends.
struct Waiting;

impl Waiting {
    fn start() -> Self {
        metrics::gauge!("postchat_answers_waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("postchat_answers_waiting").decrement(1.0);
    }
}

impl GenerationSlots {
    /// At most `bound` answers at once (`None`: no bound; `Some(0)` is taken as 1).
    pub fn new(bound: Option<usize>) -> Self {
        Self { slots: bound.map(|n| Semaphore::new(n.max(1))) }
    }

    /// Waits for a slot (first come, first served: a free slot goes to the longest waiting),
    /// held until the permit is dropped; `None` at once when unbounded.
    pub async fn take(&self) -> Option<SemaphorePermit<'_>> {
        let slots = self.slots.as_ref()?;
        if let Ok(permit) = slots.try_acquire() {
            return Some(permit);
        }
        let _waiting = Waiting::start();
        // The semaphore is never closed, so this cannot fail; if it did, the answer would go
        // ahead without a slot rather than fail.
        slots.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::GenerationSlots;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_answer_that_waited_longest() {
        let slots = Arc::new(GenerationSlots::new(Some(1)));
        let held = slots.take().await;
        assert!(held.is_some());
        let (order, mut served) = tokio::sync::mpsc::unbounded_channel();
        for answer in 0..3 {
            let (slots, order) = (slots.clone(), order.clone());
            tokio::spawn(async move {
                let _slot = slots.take().await;
                let _ = order.send(answer);
            });
            // Let it start waiting before the next one arrives.
            tokio::task::yield_now().await;
        }
        assert!(served.try_recv().is_err(), "nobody is served while the slot is held");
        drop(held);
        for answer in 0..3 {
            assert_eq!(served.recv().await, Some(answer));
        }
    }

    #[tokio::test]
    async fn without_a_bound_nothing_waits() {
        let slots = GenerationSlots::new(None);
        let (a, b) = (slots.take().await, slots.take().await);
        assert!(a.is_none() && b.is_none());
    }
}
