//! Lines for the operator on standard output (warnings and errors go to
//! standard error with `eprintln!`). `say!` writes a line at once. `note!`
//! is for what happens per subscriber (a session up or down: thousands a
//! second at a busy spoke): its lines are gathered and written by
//! [`flush`] once per control tick, so that a burst of sessions costs one
//! write, not one each. Both keep the order they were said in relative to
//! each other only within their kind; a tick flushes before it ends.
//!
//! Here rather than in the binary so that the control side's code (the
//! relay, sessions, BGP events) writes the same lines through the same
//! batch; the binary flushes it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

/// Gathered `note!` lines beyond this are written at once.
const MAX_PENDING: usize = 64 * 1024;

thread_local! {
    static PENDING: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Prints a line on stdout, ignoring a closed reader (`hdvrf run | head`):
/// losing the console must not take the router down.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
pub use crate::say;

/// A line for the next [`flush`].
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {{
        $crate::log::push(format_args!($($t)*));
    }};
}
pub use crate::note;

/// Adds a line for the next [`flush`].
pub fn push(line: std::fmt::Arguments) {
    let full = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let _ = writeln!(p, "{line}");
        p.len() >= MAX_PENDING
    });
    if full {
        flush();
    }
}

/// Writes the gathered lines, in one write.
pub fn flush() {
    let text = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if !text.is_empty() {
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn notes_wait_for_the_flush_and_keep_their_order() {
        super::push(format_args!("a {}", 1));
        super::push(format_args!("b"));
        let pending = super::PENDING.with(|p| p.borrow().clone());
        assert_eq!(pending, "a 1\nb\n");
        super::flush();
        assert!(super::PENDING.with(|p| p.borrow().is_empty()));
    }
}
