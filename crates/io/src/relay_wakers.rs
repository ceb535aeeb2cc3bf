//! One waker per relay direction, so that a wake-up says which direction it is for.
//!
//! The relay's task is woken by its two sockets' readiness. With the task's own waker
//! registered everywhere, every wake-up had to poll both directions: on a keep-alive
//! connection each request and each reply woke the task once, and the direction that had
//! nothing to do paid a read that found nothing (and its waker registered again) each time.
//! Each direction now polls its streams with a waker of its own, which notes the direction
//! before it wakes the task; the relay polls a direction waiting on its source only when that
//! direction was woken.
//!
//! A wake-up that none of them noted (the first poll, the idle watchdog's timer) polls both, as
//! before. So does every poll once the task's waker is not the one the direction wakers were
//! made with (a caller polling the relay under wakers of its own): each poll then registers the
//! caller's waker wherever a direction waits, as a plain future does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

/// A direction's waker: marks the direction woken, then wakes the task.
struct Marked {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for Marked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl Marked {
    fn take(&self) -> bool {
        // Loaded first: the common answer, "not woken", costs no atomic write.
        self.woken.load(Ordering::Acquire) && self.woken.swap(false, Ordering::AcqRel)
    }
}

/// The two directions' wakers and the record of their wake-ups.
pub(crate) struct DirectionWakers {
    up: (Arc<Marked>, Waker),
    down: (Arc<Marked>, Waker),
    /// The task's waker changed: poll both directions with it, every time.
    plain: bool,
}

fn marked(task: &Waker) -> (Arc<Marked>, Waker) {
    let m = Arc::new(Marked { woken: AtomicBool::new(false), task: task.clone() });
    (m.clone(), Waker::from(m))
}

impl DirectionWakers {
    /// Wakers that wake `task`.
    pub(crate) fn new(task: &Waker) -> Self {
        DirectionWakers { up: marked(task), down: marked(task), plain: false }
    }

    /// Which directions to poll on this wake-up (up, down): those woken since the last call,
    /// or both when neither was (or the task's waker changed).
    pub(crate) fn woken(&mut self, cx: &Context<'_>) -> (bool, bool) {
        if self.plain || !self.up.0.task.will_wake(cx.waker()) {
            self.plain = true;
            return (true, true);
        }
        match (self.up.0.take(), self.down.0.take()) {
            (false, false) => (true, true),
            woken => woken,
        }
    }

    /// The context to poll the client-to-backend direction with.
    pub(crate) fn up<'a>(&'a self, cx: &'a Context<'_>) -> Context<'a> {
        Context::from_waker(if self.plain { cx.waker() } else { &self.up.1 })
    }

    /// The context to poll the backend-to-client direction with.
    pub(crate) fn down<'a>(&'a self, cx: &'a Context<'_>) -> Context<'a> {
        Context::from_waker(if self.plain { cx.waker() } else { &self.down.1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_wake_marks_its_direction_and_wakes_the_task() {
        let (count, task) = counter();
        let cx = Context::from_waker(&task);
        let mut w = DirectionWakers::new(&task);
        assert_eq!(w.woken(&cx), (true, true), "nothing noted: both");
        w.up(&cx).waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(w.woken(&cx), (true, false), "only the woken direction");
        w.down(&cx).waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(w.woken(&cx), (false, true));
        assert_eq!(w.woken(&cx), (true, true), "a mark is taken once");
    }

    #[test]
    fn another_task_waker_polls_both_with_it_from_then_on() {
        let (_, first) = counter();
        let (second_count, second) = counter();
        let mut w = DirectionWakers::new(&first);
        let cx = Context::from_waker(&second);
        w.up(&Context::from_waker(&first)).waker().wake_by_ref();
        assert_eq!(w.woken(&cx), (true, true));
        w.up(&cx).waker().wake_by_ref();
        w.down(&cx).waker().wake_by_ref();
        assert_eq!(second_count.0.load(Ordering::SeqCst), 2, "the caller's own waker is registered");
        assert_eq!(w.woken(&Context::from_waker(&first)), (true, true), "and stays plain");
    }
}
