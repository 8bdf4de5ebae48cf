//! Parts of a page the server renders again when they change.
//!
//! An island asks a server function for their HTML and puts it in place, so the browser's
//! wasm needs neither the data's types nor the markup, only the island's own controls.

use leptos::prelude::*;

/// Puts `html`, rendered by the server, in place of the content of the element `id`.
/// Called in the browser only (from tasks an island starts).
pub fn put(id: &str, html: &str) {
    if let Some(element) = document().get_element_by_id(id) {
        element.set_inner_html(html);
    }
}

/// The values of `attribute` on the elements inside element `id` that have it, in order.
/// Called in the browser only.
pub fn attributes(id: &str, attribute: &str) -> Vec<String> {
    let Some(Ok(found)) = document()
        .get_element_by_id(id)
        .map(|element| element.query_selector_all(&format!("[{attribute}]")))
    else {
        return Vec::new();
    };
    (0..found.length())
        .filter_map(|i| found.item(i))
        .filter_map(|node| leptos::wasm_bindgen::JsCast::dyn_into::<web_sys::Element>(node).ok())
        .filter_map(|element| element.get_attribute(attribute))
        .collect()
}

/// The `name: status` values of `after` whose name was in `before` with another status:
/// what changed among the rows shown both times (rows that came or went are not changes).
pub fn changed(before: &[String], after: &[String]) -> Vec<String> {
    let name = |value: &str| value.rsplit_once(": ").map(|(name, _)| name.to_owned());
    after
        .iter()
        .filter(|now| {
            !before.contains(now)
                && before
                    .iter()
                    .any(|was| name(was).is_some() && name(was) == name(now))
        })
        .cloned()
        .collect()
}

/// Numbers loads so that an answer never replaces one asked for later: answers may arrive
/// out of order (filters typed quickly, a change and a filter at once).
#[derive(Clone, Copy)]
pub struct Loads {
    asked: StoredValue<u64>,
    shown: StoredValue<u64>,
}

impl Loads {
    pub fn new() -> Self {
        Loads {
            asked: StoredValue::new(0),
            shown: StoredValue::new(0),
        }
    }

    /// Waits for `answer` (a server function's call) and hands it to `show`, unless a load
    /// asked for later has been shown meanwhile. A refused load shows nothing.
    pub fn load<T: 'static, E: 'static>(
        self,
        answer: impl std::future::Future<Output = Result<T, E>> + 'static,
        show: impl FnOnce(T) + 'static,
    ) {
        let n = self.asked.get_value() + 1;
        self.asked.set_value(n);
        leptos::task::spawn_local(async move {
            if let Ok(answer) = answer.await
                && n > self.shown.get_value()
            {
                self.shown.set_value(n);
                show(answer);
            }
        });
    }
}

impl Default for Loads {
    fn default() -> Self {
        Self::new()
    }
}

/// Coalesces the loads changes call for: the first change loads at once; changes within the
/// next half second make one more load when it ends, and so on while they keep coming.
#[derive(Clone, Copy)]
pub struct Throttle {
    load: Callback<()>,
    /// A change came since the last load.
    waiting: StoredValue<bool>,
    /// No load in the last half second: the next change loads at once.
    idle: StoredValue<bool>,
}

impl Throttle {
    /// The half second between two loads for changes.
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

    pub fn new(load: Callback<()>) -> Self {
        Throttle {
            load,
            waiting: StoredValue::new(false),
            idle: StoredValue::new(true),
        }
    }

    /// Something changed.
    pub fn changed(self) {
        if self.idle.get_value() {
            self.idle.set_value(false);
            self.load.run(());
            self.settle();
        } else {
            self.waiting.set_value(true);
        }
    }

    fn settle(self) {
        set_timeout(
            move || {
                if self.waiting.get_value() {
                    self.waiting.set_value(false);
                    self.load.run(());
                    self.settle();
                } else {
                    self.idle.set_value(true);
                }
            },
            Self::PAUSE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::changed;

    #[test]
    fn only_rows_shown_both_times_with_another_status_are_changes() {
        let before = ["Alpha: running".to_owned(), "Beta: pending".to_owned()];
        let after = [
            "Alpha: completed".to_owned(),
            "Beta: pending".to_owned(),
            "Gamma: failed".to_owned(),
        ];
        assert_eq!(changed(&before, &after), ["Alpha: completed"]);
    }
}
