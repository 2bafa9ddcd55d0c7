//! Stored rows are input: a row that decodes but holds values no request
//! could have made (a hand edit, another program, a damaged disk) is
//! refused on load, reported as unreadable and kept as it is.

use super::Record;

impl Record {
    /// Why this record cannot be scheduled, if it cannot. Times may be any
    /// `i64` (the scheduler's arithmetic saturates); what is refused are
    /// values whose meaning breaks: an empty or inverted period, a
    /// negative delay, a zero time limit, a work waiting on itself.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some((interval, flex)) = self.periodic
            && (interval < 1 || flex < 1 || flex > interval)
        {
            return Some(format!(
                "its period ({interval} ms, flex {flex} ms) is not a period: both must be at \
                 least 1 ms and the flex at most the interval"
            ));
        }
        if self.initial_delay < 0 {
            return Some(format!(
                "its initial delay ({} ms) is negative",
                self.initial_delay
            ));
        }
        if self.time_limit.is_some_and(|t| t.is_zero()) {
            return Some("its time limit is zero: no run could finish".to_owned());
        }
        if self.prerequisites.contains(&self.id) {
            return Some("it waits on itself".to_owned());
        }
        None
    }
}
