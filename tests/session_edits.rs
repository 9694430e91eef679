//! Edits the host cannot see as parameter changes (`src/plugin/session_edits.rs`), through the
//! real CLAP ABI: the debug plugin binary loaded by the test host (`tests/host/harness.rs`), its
//! editor embedded in a host window on a private Xvfb, clicked with XTEST input as a user clicks.
//!
//! - Choosing another corner in the editor (a persisted field, not a parameter) reaches the host
//!   as an edit of the hidden, non-automatable `Session edits` parameter: gesture begin, a new
//!   value, gesture end, in that order, as output events of the next `process()`, which is what
//!   makes a host mark its session modified. The choice is in the next save.
//! - Nothing else does: opening the editor, playing, and the host loading a state (while the
//!   editor is open) send no such edit.
//!
//! nice-plug offers no `clap_host_state.mark_dirty` (nor VST3's `setDirty`), which is why the
//! plugin goes through a parameter; the harness records `mark_dirty` calls too, and there are
//! none. Needs `Xvfb` (installed by `.ci/run`).

#[path = "host/harness.rs"]
mod host;
#[path = "support/xvfb.rs"]
mod xvfb;

use std::time::{Duration, Instant};

use host::{AudioThread, Block, PluginUnderTest, TransportInfo, X11Host, parse_state, write_state};
use serde_json::Value;
use xvfb::VirtualDisplay;

const RATE: f64 = 48_000.0;
const FRAMES: u32 = 512;

/// Where corner A's name label sits in the editor (logical pixels = physical at scale 1): inside
/// the first corner panel (`layout::SLOTS` starts at (10, 336); the group frame's margin, then the
/// label), with neighbours to try in case a theme moves it by a few pixels.
const CORNER_A_LABEL: [(i16, i16); 5] = [(24, 352), (22, 350), (27, 354), (20, 348), (25, 357)];

/// Plays blocks at about real-time pace for `duration`, servicing the main thread between them.
fn play_for(audio: &mut AudioThread<'_>, beats: &mut f64, duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        audio.run_block(Block::with_transport(
            FRAMES,
            TransportInfo::playing(120.0, *beats),
        ));
        *beats += f64::from(FRAMES) * 2.0 / RATE;
        audio.pump_main_thread();
        std::thread::sleep(Duration::from_secs_f64(f64::from(FRAMES) / RATE));
    }
}

/// The output events so far that concern parameter `id` (gestures and values).
fn edits_of(audio: &AudioThread<'_>, id: u32) -> Vec<String> {
    let tag = format!("id=Some({id})");
    audio
        .other_events()
        .iter()
        .map(|e| e.description.clone())
        .filter(|d| d.contains(&tag))
        .collect()
}

fn selected_slot(plugin: &mut PluginUnderTest) -> String {
    parse_state(&plugin.save_state())["fields"]["selected-slot"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn choosing_a_corner_in_the_editor_tells_the_host_the_session_changed_and_loading_does_not() {
    let display = VirtualDisplay::start().unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: this file's only test sets the environment before it loads the plugin, so no
    // thread of this process reads it meanwhile. The plugin's X11 code reads DISPLAY, Mesa reads
    // LIBGL_ALWAYS_SOFTWARE.
    unsafe {
        std::env::set_var("DISPLAY", display.name());
        std::env::set_var("LIBGL_ALWAYS_SOFTWARE", "1");
    }
    let x11 = X11Host::connect(&display.name()).unwrap_or_else(|e| panic!("{e}"));
    let path = host::plugin_library_path();
    let mut plugin =
        PluginUnderTest::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));

    // The hidden parameter the plugin reports session edits through.
    let edits = plugin.param_by_name("Session edits");
    assert!(edits.hidden && !edits.automatable, "{edits:?}");

    // A session whose selected corner is C.
    let mut state = parse_state(&plugin.save_state());
    state["fields"]["selected-slot"] = Value::String("2".into());
    let session = write_state(&state);
    plugin.load_state(&session).expect("loading the session");
    assert_eq!(selected_slot(&mut plugin), "2");

    let parent = x11.create_parent(1, 1).unwrap_or_else(|e| panic!("{e}"));
    let mut beats = 0.0;
    let mut audio = plugin.activate(RATE, FRAMES);
    audio
        .plugin()
        .open_editor_x11(&parent, 1.0)
        .unwrap_or_else(|e| panic!("{e}"));
    play_for(&mut audio, &mut beats, Duration::from_millis(800));
    assert_eq!(
        edits_of(&audio, edits.id),
        Vec::<String>::new(),
        "opening the editor and playing are no session edits"
    );

    // The user clicks corner A's label.
    for &(x, y) in &CORNER_A_LABEL {
        x11.click(x, y).unwrap_or_else(|e| panic!("{e}"));
        play_for(&mut audio, &mut beats, Duration::from_millis(300));
        if selected_slot(audio.plugin()) == "0" {
            break;
        }
    }
    assert_eq!(
        selected_slot(audio.plugin()),
        "0",
        "clicking corner A's label selects it"
    );
    let sent = edits_of(&audio, edits.id);
    assert_eq!(
        sent.len(),
        3,
        "one gesture of Session edits: begin, value, end; the host got {sent:?}"
    );
    assert!(sent[0].starts_with("ParamGestureBegin"), "{sent:?}");
    assert!(sent[1].starts_with("ParamValue"), "{sent:?}");
    assert!(sent[2].starts_with("ParamGestureEnd"), "{sent:?}");
    let saved = parse_state(&audio.plugin().save_state());
    assert_eq!(
        saved["params"]["edits"]["i32"], 1,
        "the edit's value is the parameter's"
    );

    // The host restores the session (selected corner C) while the editor is open: no edit.
    audio
        .plugin()
        .load_state(&session)
        .expect("loading the session");
    play_for(&mut audio, &mut beats, Duration::from_millis(500));
    assert_eq!(selected_slot(audio.plugin()), "2");
    assert_eq!(
        edits_of(&audio, edits.id).len(),
        3,
        "loading a state is no session edit"
    );

    audio
        .plugin()
        .close_editor()
        .unwrap_or_else(|e| panic!("{e}"));
    audio.stop().expect("stop processing");
    // The editor's thread ends after gui.destroy; let it go before the X server does.
    plugin.idle(Duration::from_millis(500));
    let events = plugin.host_events();
    assert!(events.violations.is_empty(), "{:?}", events.violations);
    assert_eq!(
        events.state_dirty_marks, 0,
        "nice-plug cannot call clap_host_state.mark_dirty"
    );
    drop(parent);
}
