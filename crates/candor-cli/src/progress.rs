//! The run engine's progress as an indicatif bar on stderr, with rate and ETA; hidden with
//! `--quiet` or when stderr is no terminal.

use candor_experiment::run::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar for `candor run`.
pub struct ProgressBarReporter {
    bar: ProgressBar,
    shown: bool,
}

impl ProgressBarReporter {
    /// A bar that is drawn unless `quiet` or stderr is not a terminal.
    pub fn new(quiet: bool) -> Self {
        Self { bar: ProgressBar::hidden(), shown: !quiet && std::io::stderr().is_terminal() }
    }
}

impl Progress for ProgressBarReporter {
    fn start(&mut self, total: usize, done: usize) {
        if !self.shown {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} examples  {per_sec}  elapsed {elapsed}  ETA {eta}")
            .expect("the progress template is valid");
        bar.set_style(style);
        bar.set_position(done as u64);
        bar.reset_eta();
        self.bar = bar;
    }

    fn advance(&mut self) {
        self.bar.inc(1);
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
