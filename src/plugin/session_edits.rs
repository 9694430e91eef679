//! Telling the host that the session changed when no parameter did. The corners, the model file
//! and the selected corner are persisted fields, not parameters: the editor (GUI THREAD) and the
//! worker (a MIDI file encoded into a corner, WORKER THREAD) change them behind the host's back,
//! so a host that only learns of edits from parameter changes would not know the session needs
//! saving, and closing the project would silently lose them.
//!
//! CLAP has `clap_host_state.mark_dirty` for this and VST3 has `IComponentHandler2::setDirty`,
//! but nice-plug offers neither (its wrappers keep the host's interfaces to themselves; the only
//! way a plugin reaches the host is a parameter edit through the editor's `ParamSetter`). So each
//! such change is counted here ([`SessionEdits::note`]), and the editor reports new ones on its
//! next frame as an edit of a hidden, non-automatable parameter, `Session edits` (id `edits`):
//! gesture begin, a new value, gesture end, which the host receives as a parameter edit (CLAP
//! output events, VST3 `beginEdit`/`performEdit`/`endEdit`) and marks the session modified.
//! The parameter's value means nothing else; it is saved with the session like any other.
//!
//! Not reported: auditioning a corner alone ("solo", not saved: a session reopens on the pad
//! position), the editor's size (fixed; written when the editor opens), and a state the host
//! loads (that is the host's own doing). A change made while the editor is closed (a MIDI file
//! finishing encoding) is reported when it next draws.

#[cfg(feature = "editor")]
use nice_plug::context::gui::ParamSetter;
use nice_plug::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest value of `Session edits`; reports count up and wrap to 0 after it.
pub const MAX_SESSION_EDITS: i32 = 9_999;

/// The hidden parameter the editor reports session edits through.
pub fn session_edits_param() -> IntParam {
    IntParam::new(
        "Session edits",
        0,
        IntRange::Linear {
            min: 0,
            max: MAX_SESSION_EDITS,
        },
    )
    .hide()
    .non_automatable()
}

/// How many times the persisted fields were edited since the instance was created (shared by
/// the editor and the worker; not saved).
#[derive(Debug, Default)]
pub struct SessionEdits(AtomicU64);

impl SessionEdits {
    /// Counts one edit of a persisted field.
    pub fn note(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Edits so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The editor's side: which edits it has reported (GUI THREAD).
#[cfg(feature = "editor")]
#[derive(Debug, Default)]
pub struct EditReporter {
    reported: u64,
    /// The value last sent: the parameter only takes it once the host has the event (at its next
    /// `process` or flush), so a second report before then must not send the same value again.
    sent: Option<i32>,
}

#[cfg(feature = "editor")]
impl EditReporter {
    /// Reports the edits counted since the last call, if any, as one edit of `param` to a value
    /// it does not hold and was not last sent (counting up, wrapping); returns whether it did.
    pub fn report(&mut self, edits: &SessionEdits, param: &IntParam, setter: &ParamSetter) -> bool {
        let count = edits.count();
        if count == self.reported {
            return false;
        }
        self.reported = count;
        let after = |v: i32| {
            if v >= MAX_SESSION_EDITS {
                0
            } else {
                v.max(0) + 1
            }
        };
        let mut next = after(param.value());
        if self.sent == Some(next) {
            next = after(next);
        }
        self.sent = Some(next);
        setter.begin_set_parameter(param);
        setter.set_parameter(param, next);
        setter.end_set_parameter(param);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::generator::{Controls, Slot};
    use crate::plugin::params::{DrumVaeParams, ParamControls};
    use crate::plugin::saved_state;
    use std::sync::Arc;

    /// The worker storing a corner it encoded counts as an edit; the host loading a state (with
    /// other corners and another model) does not.
    #[test]
    fn a_corner_from_the_worker_is_an_edit_and_a_loaded_state_is_not() {
        let params = Arc::new(DrumVaeParams::default());
        let controls = ParamControls {
            params: params.clone(),
            cue: Arc::new(Default::default()),
        };
        controls.set_slot(1, Slot::Seed { seed: 5 });
        assert_eq!(params.field_edits.count(), 1);
        let mut state = saved_state::save(&params);
        let text = String::from_utf8(state.split_off(8)).unwrap();
        let text = text
            .replace(
                r#"{\"kind\":\"seed\",\"seed\":5}"#,
                r#"{\"kind\":\"seed\",\"seed\":6}"#,
            )
            .replace(
                r#""model":"null""#,
                r#""model":"\"/elsewhere.safetensors\"""#,
            );
        assert!(
            text.contains("elsewhere") && text.contains(r#"\"seed\":6"#),
            "{text}"
        );
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend(text.into_bytes());
        saved_state::restore(&params, &bytes).unwrap();
        assert_eq!(params.slots.read().0[1], Slot::Seed { seed: 6 });
        assert_eq!(params.field_edits.count(), 1, "loading is no edit");
    }
}

#[cfg(all(test, feature = "editor"))]
mod reporter_tests {
    use super::*;
    use nice_plug::context::gui::GuiContextInner;
    use parking_lot::Mutex;

    /// A GUI context that records what the editor sends the host.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl GuiContextInner for Recorder {
        fn plugin_api(&self) -> nice_plug::context::PluginApi {
            nice_plug::context::PluginApi::Clap
        }
        unsafe fn raw_begin_set_parameter(&self, _param: ParamPtr) {
            self.0.lock().push("begin".into());
        }
        unsafe fn raw_set_parameter_normalized(&self, param: ParamPtr, normalized: f32) {
            // SAFETY: the test's parameter outlives the call.
            let plain = unsafe { param.preview_plain(normalized) };
            self.0.lock().push(format!("set {plain}"));
        }
        unsafe fn raw_end_set_parameter(&self, _param: ParamPtr) {
            self.0.lock().push("end".into());
        }
        fn get_state(&self) -> PluginState {
            unimplemented!("not used by the reporter")
        }
        fn set_state(&self, _state: PluginState) {
            unimplemented!("not used by the reporter")
        }
        fn request_restart(&self) {}
    }

    #[test]
    fn each_batch_of_edits_is_reported_once_as_one_gesture_of_the_hidden_parameter() {
        let param = session_edits_param();
        assert!(param.flags().contains(ParamFlags::HIDDEN));
        assert!(param.flags().contains(ParamFlags::NON_AUTOMATABLE));
        let recorder = Recorder::default();
        let setter = ParamSetter {
            raw_context: &recorder,
        };
        let edits = SessionEdits::default();
        let mut reporter = EditReporter::default();
        assert!(
            !reporter.report(&edits, &param, &setter),
            "nothing to report"
        );
        edits.note();
        edits.note();
        assert!(reporter.report(&edits, &param, &setter));
        assert!(!reporter.report(&edits, &param, &setter), "reported once");
        assert_eq!(*recorder.0.lock(), ["begin", "set 1", "end"]);
    }

    /// The host applies a value when it takes the event (next block): two reports before that
    /// still send two different values.
    #[test]
    fn a_second_report_before_the_host_applied_the_first_sends_another_value() {
        let param = session_edits_param();
        let recorder = Recorder::default();
        let setter = ParamSetter {
            raw_context: &recorder,
        };
        let edits = SessionEdits::default();
        let mut reporter = EditReporter::default();
        edits.note();
        reporter.report(&edits, &param, &setter);
        edits.note();
        reporter.report(&edits, &param, &setter);
        assert_eq!(
            *recorder.0.lock(),
            ["begin", "set 1", "end", "begin", "set 2", "end"]
        );
    }

    #[test]
    fn the_reported_value_wraps_after_its_largest() {
        let param = session_edits_param();
        // SAFETY: sets the test's own parameter, as the host would.
        unsafe { param.as_ptr()._internal_set_normalized_value(1.0) };
        assert_eq!(param.value(), MAX_SESSION_EDITS);
        let recorder = Recorder::default();
        let setter = ParamSetter {
            raw_context: &recorder,
        };
        let edits = SessionEdits::default();
        edits.note();
        EditReporter::default().report(&edits, &param, &setter);
        assert_eq!(*recorder.0.lock(), ["begin", "set 0", "end"]);
    }
}
