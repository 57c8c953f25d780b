//! `[notify]` (docs/notifications.md): its hooks, read and checked.

use crate::timearg;
use toml::Spanned;

use super::fields::*;
use super::*;

impl Config {
    /// The `[notify]` table.
    pub(super) fn notify(&self, table: Spanned<RawTable>) -> Result<Notify, Vec<Problem>> {
        let mut fields = Fields::new(self, "[notify]", table);
        let mut hook = |name| {
            let value = fields.string(name)?;
            match Hook::parse(value.get_ref()) {
                Ok(hook) => Some(hook),
                Err(why) => {
                    fields.problem(value.span(), format!("{name}: {why}"));
                    None
                }
            }
        };
        let on_failure = hook("on_failure");
        let on_recovery = hook("on_recovery");
        let notify_after = fields.whole("notify_after", 1);
        let positive = |text: &str| timearg::positive_duration(text).map(drop);
        let timeout = fields.checked("timeout", positive);
        let mut problems = fields.problems;
        for (name, value) in fields.table {
            let hint = crate::suggest::hint(&name, NOTIFY_KEYS.iter().copied());
            let message = format!(
                "[notify]: unknown key `{name}`{hint}; accepted: {}",
                NOTIFY_KEYS.join(", ")
            );
            problems.push(self.problem(value.span(), message));
        }
        if !problems.is_empty() {
            for problem in &mut problems {
                problem.in_notify = true;
            }
            return Err(problems);
        }
        Ok(Notify {
            on_failure,
            on_recovery,
            notify_after: notify_after.unwrap_or(1),
            timeout: timeout
                .and_then(|t| timearg::positive_duration(t.get_ref()).ok())
                .unwrap_or(HOOK_TIMEOUT),
        })
    }
}
