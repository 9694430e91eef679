//! The editor through the real CLAP ABI (the plugin binary loaded by the test host in
//! `tests/host/harness.rs`), embedded in an X11 window of the host on a private Xvfb with Mesa's
//! software OpenGL:
//!
//! - **Lifecycle.** While the audio thread plays a running transport, the editor is opened and
//!   closed 100 times (`create`, `set_scale`, `get_size`, `set_parent`, `show`, a few frames,
//!   `hide`, `destroy`). Every open embeds a window of the reported size in the host's window (the
//!   editor is seen drawing on the first and the last open), every close ends the editor's GUI
//!   thread and closes what it opened (threads and file descriptors come back to where they were
//!   before the first open, the host's window is left empty), nothing panics, and the host sees
//!   no protocol violation. Memory: see below.
//! - **Size and state.** `gui.get_size` reports the default size and the embedded window has it;
//!   the selected corner and the editor size survive a save and a load into a fresh instance, and
//!   a restored size is the size the editor reports and opens at (the host restores a session
//!   after `Plugin::editor` built the editor object, so the editor reads its size when it opens).
//!
//! **Known problems** (ignored tests that fail today; run them with `--ignored`):
//!
//! - baseview 0.4.2 (nice-plug-egui's windowing) leaks its xkbcommon keymap on every editor open
//!   (`XkbcommonState::new` never unrefs the keymap of `xkb_x11_keymap_new_from_device`): about
//!   70 KiB of heap per open (81 KiB an open measured in all, with Mesa's reload churn). The
//!   lifecycle test tolerates it (its bound catches anything of an editor's size);
//!   [`editor_open_close_cycles_leak_no_heap`] holds the line without it.
//!
//! Memory is measured twice: the glibc heap in use (`mallinfo2`: exact, what a leak grows) and the
//! resident set (`VmRSS` after `malloc_trim`, so freed heap pages do not count). Both are taken
//! after close #10 (the first opens load Mesa, compile its shaders, fill caches: memory that stays,
//! once) and after close #100.
//!
//! Needs `Xvfb` and Mesa's software GL (installed by `.ci/run`); fails if Xvfb is missing. The X
//! server is `tests/support/xvfb.rs`'s. Linux with glibc only.

#[path = "host/harness.rs"]
mod host;
#[path = "support/xvfb.rs"]
mod xvfb;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use host::{
    AudioThread, Block, PluginUnderTest, TransportInfo, X11Host, X11ParentWindow,
    plugin_library_path,
};
use serde_json::Value;
use xvfb::VirtualDisplay;

/// The editor's default size in logical pixels (`drumvae::plugin::params::EDITOR_SIZE`), which is
/// the physical size at scale 1.
const DEFAULT_SIZE: (u32, u32) = (1060, 700);

const RATE: f64 = 48_000.0;
const FRAMES: u32 = 512;
const TEMPO: f64 = 120.0;

/// Open/close cycles, and the one after which the memory baseline is taken.
const CYCLES: usize = 100;
const BASELINE_CYCLE: usize = 10;
/// How long the editor draws: long enough on the first open for Mesa's first frames, a few
/// frames on the later ones.
const FIRST_DRAW: Duration = Duration::from_millis(300);
const DRAW: Duration = Duration::from_millis(30);

/// Heap growth allowed per open/close, from close #10 to close #100, in the lifecycle test. An
/// open editor holds about 20 MiB of heap (egui with its font atlas, the GL renderer, baseview;
/// the test prints the figure): leaking a hundredth of it on every open fails. What passes is
/// the known baseview keymap leak (about 70 KiB an open) and Mesa's reload churn (the GL stack is
/// loaded and unloaded with every editor: about 11 KiB an open, none with it kept loaded).
const MAX_HEAP_GROWTH_PER_OPEN_KIB: f64 = 128.0;
/// The same without the known baseview leak (the ignored test): Mesa's churn and some margin.
const MAX_HEAP_GROWTH_PER_OPEN_KIB_STRICT: f64 = 24.0;
/// Resident memory growth allowed from close #10 to close #100. An open editor adds about
/// 30 MiB to the resident set; the heap's growth (above) plus allocator fragmentation around the
/// leaked blocks stays well under this.
const MAX_RSS_GROWTH_KIB: u64 = 24 * 1024;
/// How long the editor's teardown may go on after `gui.destroy` returned (see
/// [`wait_until_closed`]).
const TEARDOWN_LIMIT: Duration = Duration::from_secs(2);

/// The tests here run one at a time: they share the process's `DISPLAY` and measure the whole
/// process's threads and memory.
static SERIAL: Mutex<()> = Mutex::new(());

/// A private X server for one test, with `DISPLAY` pointing at it.
struct Session {
    display: VirtualDisplay,
    _serial: MutexGuard<'static, ()>,
}

fn session() -> Session {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let display = VirtualDisplay::start().unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: the tests of this file are serialised by SERIAL and set the environment before
    // they load the plugin, so no thread of this process reads it meanwhile. The plugin's X11
    // code reads DISPLAY (XOpenDisplay(NULL)) and Mesa reads LIBGL_ALWAYS_SOFTWARE when an editor
    // opens.
    unsafe {
        std::env::set_var("DISPLAY", display.name());
        std::env::set_var("LIBGL_ALWAYS_SOFTWARE", "1");
    }
    Session {
        display,
        _serial: serial,
    }
}

fn load() -> PluginUnderTest {
    let path = plugin_library_path();
    let plugin =
        PluginUnderTest::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    assert!(plugin.has_gui(), "the plugin has no gui extension");
    plugin
}

// ---------------------------------------------------------------------------------------------
// The process's resources

/// `struct mallinfo2` of glibc (2.33 and later): all fields, in order; two are read.
#[repr(C)]
#[allow(dead_code)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
    fn malloc_trim(pad: usize) -> i32;
}

/// Heap in use (glibc: every arena, plus mmapped blocks), KiB. The plugin binary allocates from
/// the same glibc heap, and so do Mesa, Xlib and xkbcommon.
fn heap_kib() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { mallinfo2() };
    ((info.uordblks + info.hblkhd) / 1024) as u64
}

/// Resident memory of this process, KiB, after handing free heap pages back to the system.
fn rss_kib() -> u64 {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Open file descriptors of this process (X11 connections, DRI and event fds, ...).
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The process's threads and file descriptors, and the host window's children.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Footprint {
    threads: usize,
    fds: usize,
    children: usize,
}

fn footprint(parent: Option<&X11ParentWindow<'_>>) -> Footprint {
    Footprint {
        threads: threads(),
        fds: fds(),
        children: parent.map_or(0, |p| p.children().unwrap_or_else(|e| panic!("{e}")).len()),
    }
}

/// Waits after `gui.destroy` until the editor is gone: no window left in `parent` and the
/// process back to `before`'s threads and file descriptors (at most [`TEARDOWN_LIMIT`]).
/// Returns the footprint right after `gui.destroy` returned and how long the rest took.
///
/// baseview (0.4.2, X11) does not always join the editor's thread in `gui.destroy`: its
/// `WindowThreadHandle::drop` asks the stopping thread to `Show` first and gives up on the join
/// when that request fails, so the thread (with its llvmpipe threads, X11 window and connection)
/// can outlive the call by some milliseconds. A leak is what outlives this wait.
fn wait_until_closed(
    parent: &X11ParentWindow<'_>,
    before: &Footprint,
    what: &str,
) -> (Footprint, Duration) {
    let returned = Instant::now();
    let right_after = footprint(Some(parent));
    let mut now = right_after.clone();
    while now != *before && returned.elapsed() < TEARDOWN_LIMIT {
        std::thread::sleep(Duration::from_millis(2));
        now = footprint(Some(parent));
    }
    assert_eq!(
        now, *before,
        "{what}: {TEARDOWN_LIMIT:?} after gui.destroy the process has {} threads and {} file \
         descriptors (before the first open: {} and {}) and the host window {} children: the \
         editor leaks",
        now.threads, now.fds, before.threads, before.fds, now.children
    );
    (right_after, returned.elapsed())
}

// ---------------------------------------------------------------------------------------------
// Playing and drawing

/// The song position of the running transport, advanced block by block.
struct Transport {
    beats: f64,
}

impl Transport {
    fn next(&mut self) -> Block {
        let block = Block::with_transport(FRAMES, TransportInfo::playing(TEMPO, self.beats));
        self.beats += f64::from(FRAMES) * TEMPO / 60.0 / RATE;
        block
    }

    /// Plays blocks at about real-time pace for `duration` (at least one block), servicing the
    /// main thread between them as a host's GUI thread does.
    fn play_for(&mut self, audio: &mut AudioThread<'_>, duration: Duration) {
        let start = Instant::now();
        let block_time = Duration::from_secs_f64(f64::from(FRAMES) / RATE);
        let mut played = 0u32;
        loop {
            audio.run_block(self.next());
            played += 1;
            audio.pump_main_thread();
            let now = Instant::now();
            if now >= start + duration {
                break;
            }
            let due = start + block_time * played;
            if due > now {
                std::thread::sleep((due - now).min(start + duration - now));
            }
        }
    }
}

/// Plays until the editor's top-left part (header, morph pad, voice labels) shows more than a
/// flat fill in the host window, at most `timeout`; returns its number of distinct colours and
/// how long it took. A region, not the whole window, so the test's own buffers stay small next
/// to what it measures.
fn play_until_drawn(
    transport: &mut Transport,
    audio: &mut AudioThread<'_>,
    parent: &X11ParentWindow<'_>,
    timeout: Duration,
) -> (usize, Duration) {
    let start = Instant::now();
    loop {
        transport.play_for(audio, Duration::from_millis(50));
        let colours = parent
            .capture_region(0, 0, 420, 320)
            .unwrap_or_else(|e| panic!("{e}"))
            .distinct_colours();
        if colours > 50 || start.elapsed() > timeout {
            return (colours, start.elapsed());
        }
    }
}

/// The plugin's window embedded in `parent`: exactly one child, viewable, of `size`.
fn assert_embedded(parent: &X11ParentWindow<'_>, size: (u32, u32), what: &str) {
    let children = parent.children().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(children.as_slice(), [c] if c.viewable && (c.width, c.height) == size),
        "{what}: the host window should hold the editor's {}x{} window, viewable; it has \
         {children:?}",
        size.0,
        size.1
    );
}

// ---------------------------------------------------------------------------------------------
// Opening and closing

/// What [`open_and_close_100_times`] measured.
struct Lifecycle {
    /// Heap in use after close #10 and after close #100, KiB.
    heap: (u64, u64),
    /// VmRSS after close #10 and after close #100, KiB.
    rss: (u64, u64),
}

impl Lifecycle {
    fn heap_growth_per_open_kib(&self) -> f64 {
        (self.heap.1 as f64 - self.heap.0 as f64) / (CYCLES - BASELINE_CYCLE) as f64
    }

    fn rss_growth_kib(&self) -> u64 {
        self.rss.1.saturating_sub(self.rss.0)
    }
}

/// Activates the plugin, plays a running transport and opens and closes the editor 100 times,
/// asserting on every cycle that the editor embeds, runs its GUI thread and goes away without a
/// trace (threads, file descriptors, windows), and at the end that the host saw no protocol
/// violation. Prints and returns the memory measurements.
fn open_and_close_100_times() -> Lifecycle {
    let session = session();
    let started = Instant::now();
    let x11 = X11Host::connect(&session.display.name()).unwrap_or_else(|e| panic!("{e}"));
    let mut plugin = load();
    assert!(plugin.gui_is_api_supported(c"x11", false));
    let mut audio = plugin.activate(RATE, FRAMES);
    let mut transport = Transport { beats: 0.0 };
    transport.play_for(&mut audio, Duration::from_millis(100));

    let before = footprint(None);
    let heap_before = heap_kib();
    let mut heap_baseline = 0;
    let mut rss_baseline = 0;
    let mut editor_heap = 0;
    let mut most_threads_open = 0;
    let mut first_frame = Duration::ZERO;
    let mut drawn_colours = Vec::new();
    let mut slowest_cycle = Duration::ZERO;
    // Closes after which the editor's thread was still running when gui.destroy returned, and
    // the longest such teardown.
    let mut late_teardowns = 0;
    let mut longest_teardown = Duration::ZERO;
    for cycle in 1..=CYCLES {
        let cycle_start = Instant::now();
        let parent = x11.create_parent(1, 1).unwrap_or_else(|e| panic!("{e}"));
        let size = audio
            .plugin()
            .open_editor_x11(&parent, 1.0)
            .unwrap_or_else(|e| panic!("open #{cycle}: {e}"));
        assert_eq!(size, DEFAULT_SIZE, "open #{cycle}: gui.get_size");
        assert_embedded(&parent, size, &format!("open #{cycle}"));
        let threads_open = threads();
        assert!(
            threads_open > before.threads,
            "open #{cycle}: no GUI thread runs ({threads_open} threads, {} before)",
            before.threads
        );
        most_threads_open = most_threads_open.max(threads_open);

        if cycle == 1 || cycle == CYCLES {
            // The editor really draws, through the embedding, with the transport running.
            let (colours, took) =
                play_until_drawn(&mut transport, &mut audio, &parent, Duration::from_secs(60));
            assert!(
                colours > 50,
                "open #{cycle}: the editor drew nothing in 60 s ({colours} colours in the host \
                 window)"
            );
            drawn_colours.push(colours);
            if cycle == 1 {
                first_frame = took;
                transport.play_for(&mut audio, FIRST_DRAW);
            }
        } else {
            transport.play_for(&mut audio, DRAW);
        }
        if cycle == BASELINE_CYCLE {
            editor_heap = heap_kib();
        }

        audio
            .plugin()
            .close_editor()
            .unwrap_or_else(|e| panic!("close #{cycle}: {e}"));
        let (right_after, teardown) =
            wait_until_closed(&parent, &before, &format!("close #{cycle}"));
        if right_after != before {
            late_teardowns += 1;
            longest_teardown = longest_teardown.max(teardown);
        }
        drop(parent);
        transport.play_for(&mut audio, Duration::from_millis(5));
        if cycle == BASELINE_CYCLE {
            heap_baseline = heap_kib();
            rss_baseline = rss_kib();
            editor_heap = editor_heap.saturating_sub(heap_baseline);
        }
        slowest_cycle = slowest_cycle.max(cycle_start.elapsed());
    }
    let measured = Lifecycle {
        heap: (heap_baseline, heap_kib()),
        rss: (rss_baseline, rss_kib()),
    };
    let end = footprint(None);
    let blocks = audio.blocks_processed();
    let peak = audio.peak_output();
    audio.stop().unwrap();

    eprintln!(
        "editor lifecycle: {CYCLES} opens/closes in {:.1} s (first frame after {} ms; \
         {drawn_colours:?} colours drawn on the first and last opens; slowest cycle {} ms), \
         {blocks} blocks played. Threads: {} before, up to {most_threads_open} \
         while open, {} after; file descriptors: {} before, {} after. gui.destroy returned with \
         the editor's thread still running in {late_teardowns} of {CYCLES} closes (gone at most \
         {} ms later). Heap in use: {heap_before} KiB before, {} KiB after close \
         #{BASELINE_CYCLE}, {} KiB after close #{CYCLES}: {:.1} KiB an open (an open editor \
         holds {editor_heap} KiB). VmRSS: {} KiB after close #{BASELINE_CYCLE}, {} KiB after \
         close #{CYCLES}: {} KiB growth.",
        started.elapsed().as_secs_f64(),
        first_frame.as_millis(),
        slowest_cycle.as_millis(),
        before.threads,
        end.threads,
        before.fds,
        end.fds,
        longest_teardown.as_millis(),
        measured.heap.0,
        measured.heap.1,
        measured.heap_growth_per_open_kib(),
        measured.rss.0,
        measured.rss.1,
        measured.rss_growth_kib(),
    );
    assert_eq!(end, before);
    assert_eq!(peak, 0.0, "the audio output should stay silent");
    let events = plugin.host_events();
    assert!(events.violations.is_empty(), "{:?}", events.violations);
    let errors: Vec<_> = events
        .logs
        .iter()
        .filter(|l| matches!(l.severity.as_str(), "error" | "fatal" | "host misbehaving"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        events.gui_closed.is_empty(),
        "the plugin reported its GUI closed (gui.closed) though only the host closed it: {:?}",
        events.gui_closed
    );
    assert!(!plugin.gui_is_created());
    measured
}

#[test]
fn editor_opens_and_closes_100_times_without_leaking_or_panicking() {
    let measured = open_and_close_100_times();
    let per_open = measured.heap_growth_per_open_kib();
    assert!(
        per_open < MAX_HEAP_GROWTH_PER_OPEN_KIB,
        "the heap grew by {per_open:.1} KiB an open from close #{BASELINE_CYCLE} ({} KiB) to \
         close #{CYCLES} ({} KiB): the editor leaks",
        measured.heap.0,
        measured.heap.1
    );
    assert!(
        measured.rss_growth_kib() < MAX_RSS_GROWTH_KIB,
        "resident memory grew by {} KiB from close #{BASELINE_CYCLE} ({} KiB) to close \
         #{CYCLES} ({} KiB): the editor leaks",
        measured.rss_growth_kib(),
        measured.rss.0,
        measured.rss.1
    );
}

#[test]
#[ignore = "known problem: baseview 0.4.2 leaks its xkbcommon keymap (about 70 KiB) on every \
            editor open"]
fn editor_open_close_cycles_leak_no_heap() {
    let measured = open_and_close_100_times();
    let per_open = measured.heap_growth_per_open_kib();
    assert!(
        per_open < MAX_HEAP_GROWTH_PER_OPEN_KIB_STRICT,
        "the heap grew by {per_open:.1} KiB an open from close #{BASELINE_CYCLE} ({} KiB) to \
         close #{CYCLES} ({} KiB)",
        measured.heap.0,
        measured.heap.1
    );
}

// ---------------------------------------------------------------------------------------------
// Size and saved state

// Saved states: nice-plug's CLAP state is an 8-byte little-endian length, then that much JSON
// whose "fields" hold each persisted field as JSON text.

fn parse_state(bytes: &[u8]) -> Value {
    assert!(bytes.len() >= 8, "{bytes:?}");
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(length as usize, bytes.len() - 8, "length header");
    serde_json::from_slice(&bytes[8..]).expect("the state is JSON")
}

fn write_state(state: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(state).unwrap();
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes
}

fn field(state: &Value, name: &str) -> String {
    state["fields"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no persisted field {name:?} in {state}"))
        .to_owned()
}

/// Opens the editor in a new host window, lets it draw a little and closes it; returns the size
/// `gui.get_size` reported and the size of the window the plugin embedded.
fn open_and_close(plugin: &mut PluginUnderTest, x11: &X11Host) -> ((u32, u32), (u32, u32)) {
    let parent = x11.create_parent(1, 1).unwrap_or_else(|e| panic!("{e}"));
    let before = footprint(Some(&parent));
    let reported = plugin
        .open_editor_x11(&parent, 1.0)
        .unwrap_or_else(|e| panic!("{e}"));
    plugin.idle(Duration::from_millis(200));
    let children = parent.children().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(children.len(), 1, "{children:?}");
    let embedded = (children[0].width, children[0].height);
    plugin.close_editor().unwrap_or_else(|e| panic!("{e}"));
    // Also keeps a late editor thread from losing its X server when the test ends (Xlib's
    // default I/O error handler exits the process).
    wait_until_closed(&parent, &before, "closing the editor");
    (reported, embedded)
}

/// A state saved by a fresh instance, with the editor size and the selected corner changed (the
/// editor is fixed-size: `gui.can_resize` is false, so a session restores its size from the
/// state only).
fn edited_state(size: (u32, u32), slot: usize) -> Vec<u8> {
    let mut original = load();
    assert!(!original.gui_can_resize(), "the editor is fixed-size");
    let mut state = parse_state(&original.save_state());
    assert_eq!(field(&state, "editor-size"), "[1060,700]");
    assert_eq!(field(&state, "selected-slot"), "0");
    state["fields"]["editor-size"] = Value::String(format!("[{},{}]", size.0, size.1));
    state["fields"]["selected-slot"] = Value::String(slot.to_string());
    write_state(&state)
}

#[test]
fn editor_reports_its_size_and_keeps_its_fields_through_save_and_load() {
    let session = session();
    let x11 = X11Host::connect(&session.display.name()).unwrap_or_else(|e| panic!("{e}"));
    let mut plugin = load();
    assert!(plugin.gui_is_api_supported(c"x11", false));
    assert!(
        !plugin.gui_is_api_supported(c"x11", true),
        "nice-plug has no floating windows"
    );
    assert_eq!(plugin.gui_preferred_api(), Some(("x11".to_owned(), false)));

    // The default size, before and after opening, and the window the plugin embeds has it.
    assert_eq!(plugin.gui_size(), Some(DEFAULT_SIZE));
    assert_eq!(
        open_and_close(&mut plugin, &x11),
        (DEFAULT_SIZE, DEFAULT_SIZE)
    );
    assert_eq!(plugin.gui_size(), Some(DEFAULT_SIZE));

    // The selected corner and the editor size survive a save and a load, and opening the editor
    // does not overwrite the loaded size.
    let mut restored = load();
    restored
        .load_state(&edited_state((900, 640), 2))
        .expect("loading the edited state");
    open_and_close(&mut restored, &x11);
    let saved = parse_state(&restored.save_state());
    assert_eq!(field(&saved, "selected-slot"), "2");
    assert_eq!(field(&saved, "editor-size"), "[900,640]");

    for plugin in [&plugin, &restored] {
        let events = plugin.host_events();
        assert!(events.violations.is_empty(), "{:?}", events.violations);
        assert!(events.gui_closed.is_empty(), "{:?}", events.gui_closed);
    }
}

/// A session saved with another editor size and corner reopens with them: `gui.get_size` reports
/// the restored size as soon as the state is loaded, the editor opens at it (twice: closing does
/// not lose it), and both fields are saved back.
#[test]
fn editor_size_persists_with_the_plugin_state() {
    let session = session();
    let x11 = X11Host::connect(&session.display.name()).unwrap_or_else(|e| panic!("{e}"));
    let size = (900, 640);
    let mut restored = load();
    restored
        .load_state(&edited_state(size, 2))
        .expect("loading the edited state");
    let after_load = restored.gui_size();
    let (reported, embedded) = open_and_close(&mut restored, &x11);
    assert_eq!(
        (after_load, reported, embedded),
        (Some(size), size, size),
        "after loading a state with editor-size [900,640]: (gui.get_size after the load, \
         gui.get_size once open, the embedded window's size)"
    );
    assert_eq!(restored.gui_size(), Some(size), "gui.get_size once closed");
    assert_eq!(
        open_and_close(&mut restored, &x11),
        (size, size),
        "the second open"
    );
    let saved = parse_state(&restored.save_state());
    assert_eq!(field(&saved, "editor-size"), "[900,640]");
    assert_eq!(field(&saved, "selected-slot"), "2");

    // A state loaded into an instance whose editor was open before (at the default size).
    let mut reused = load();
    assert_eq!(
        open_and_close(&mut reused, &x11),
        (DEFAULT_SIZE, DEFAULT_SIZE)
    );
    let other = (980, 720);
    reused
        .load_state(&edited_state(other, 3))
        .expect("loading the edited state");
    assert_eq!(
        reused.gui_size(),
        Some(other),
        "gui.get_size after the load"
    );
    assert_eq!(open_and_close(&mut reused, &x11), (other, other));
    let saved = parse_state(&reused.save_state());
    assert_eq!(field(&saved, "editor-size"), "[980,720]");
    assert_eq!(field(&saved, "selected-slot"), "3");

    for plugin in [&restored, &reused] {
        let events = plugin.host_events();
        assert!(events.violations.is_empty(), "{:?}", events.violations);
        assert!(events.gui_closed.is_empty(), "{:?}", events.gui_closed);
    }
}
