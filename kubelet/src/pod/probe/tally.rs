//! The thresholds of one probe, as kubelet's prober worker counts them: a result changes the
//! probe's verdict only after `successThreshold` successes or `failureThreshold` failures in
//! a row. Pure, so every threshold rule is a plain unit test.

use super::{Outcome, Verdict};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    last: Option<Verdict>,
    /// How many times in a row `last` came.
    run: u32,
}

impl Tally {
    /// Count one run's outcome. Returns the verdict to publish once its threshold is reached
    /// (and at every run after that while the streak lasts); Unknown outcomes are thrown away.
    pub fn record(&mut self, outcome: &Outcome, success_threshold: u32, failure_threshold: u32) -> Option<Verdict> {
        let result = match outcome {
            Outcome::Success | Outcome::Warning(_) => Verdict::Success,
            Outcome::Failure(_) => Verdict::Failure,
            Outcome::Unknown(_) => return None,
        };
        if self.last == Some(result) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            Verdict::Success => success_threshold,
            Verdict::Failure => failure_threshold,
        };
        (self.run >= threshold).then_some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcomes: &[Outcome], success: u32, failure: u32) -> Vec<Option<Verdict>> {
        let mut tally = Tally::default();
        outcomes.iter().map(|o| tally.record(o, success, failure)).collect()
    }

    fn fail() -> Outcome {
        Outcome::Failure("refused".into())
    }

    #[test]
    fn failures_need_the_failure_threshold_in_a_row() {
        use Verdict::*;
        let outcomes = [fail(), fail(), Outcome::Success, fail(), fail(), fail(), fail()];
        assert_eq!(run(&outcomes, 1, 3), [None, None, Some(Success), None, None, Some(Failure), Some(Failure)]);
    }

    #[test]
    fn successes_need_the_success_threshold_in_a_row() {
        use Verdict::*;
        let outcomes = [Outcome::Success, fail(), Outcome::Success, Outcome::Warning("redirect".into())];
        assert_eq!(run(&outcomes, 2, 1), [None, Some(Failure), None, Some(Success)]);
    }

    #[test]
    fn unknown_outcomes_neither_count_nor_break_a_streak() {
        let outcomes = [fail(), Outcome::Unknown("port \"x\" not found".into()), fail()];
        assert_eq!(run(&outcomes, 1, 2), [None, None, Some(Verdict::Failure)]);
    }
}
