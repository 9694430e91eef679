//! A private X server for the GUI tests (`tests/editor_lifecycle.rs`, `tests/editor_screenshot.rs`):
//! [`VirtualDisplay::start`] runs `Xvfb` on a free display and waits until it serves; dropping it
//! stops the server with SIGTERM (so Xvfb removes its lock file and socket) and waits for it.
//!
//! Displays: the first of 90..=99 that no live server holds. A lock file (`/tmp/.X<n>-lock`)
//! whose process is gone is stale (Xvfb takes such a display over). Tests of one binary run in
//! parallel threads and other processes may start X servers meanwhile, so a display counts as
//! ours only once the server answering on it is the one we started (the lock file names its pid);
//! a server that lost the race for a display exits and the next display is tried.
//!
//! Linux (the `/proc` checks, `prctl`); needs `Xvfb` on the `PATH`.
#![allow(dead_code)]

use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The displays the tests use.
pub const DISPLAYS: RangeInclusive<u32> = 90..=99;

unsafe extern "C" {
    /// POSIX `kill(2)`, for SIGTERM (std's `Child::kill` sends SIGKILL, which leaves the server's
    /// lock file and socket behind).
    fn kill(pid: i32, signal: i32) -> i32;
    /// Linux `prctl(2)`, for `PR_SET_PDEATHSIG`.
    fn prctl(option: i32, ...) -> i32;
}

const SIGTERM: i32 = 15;
const PR_SET_PDEATHSIG: i32 = 1;

/// Displays this process's servers hold or are starting on (other threads skip them).
static CLAIMED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A private X server (`Xvfb :N -screen 0 1280x800x24 -nolisten tcp -noreset`), stopped when
/// dropped (SIGTERM; SIGKILL after 5 s).
pub struct VirtualDisplay {
    child: Child,
    number: u32,
}

impl VirtualDisplay {
    /// Starts Xvfb on the first free display of [`DISPLAYS`] and waits until it accepts
    /// connections. Fails with an installation hint when Xvfb is missing.
    ///
    /// If this process dies without dropping the guard (an abort), the server gets SIGTERM too.
    /// That signal follows the thread that started the server, so drop the guard on that thread
    /// (a test's own guard always is).
    pub fn start() -> Result<Self, String> {
        for number in DISPLAYS {
            if !claim(number) {
                continue;
            }
            match Self::start_on(number) {
                Ok(Some(server)) => return Ok(server),
                Ok(None) => release(number),
                Err(e) => {
                    release(number);
                    return Err(e);
                }
            }
        }
        Err(format!(
            "no free X display in {}..={}",
            DISPLAYS.start(),
            DISPLAYS.end()
        ))
    }

    /// Starts Xvfb on `:number`: `None` if another server holds or takes the display.
    fn start_on(number: u32) -> Result<Option<Self>, String> {
        if display_in_use(number) {
            return Ok(None);
        }
        let mut command = Command::new("Xvfb");
        command
            .args([
                &format!(":{number}"),
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
                // Without it the server resets whenever its last client disconnects (as the
                // readiness probe below does), refusing connections meanwhile.
                "-noreset",
            ])
            // A tool the tests run under (heaptrack, malloc tracing) is for the tests, not the
            // X server.
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only makes a syscall.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                Ok(())
            });
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    "Xvfb is not installed: the GUI tests need it and Mesa's software OpenGL \
                     (apt-get install xvfb libgl1-mesa-dri libglx-mesa0; see .ci/run)"
                        .into(),
                );
            }
            Err(e) => return Err(format!("cannot start Xvfb: {e}")),
        };
        let mut server = Self { child, number };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = server.child.try_wait() {
                // Lost the display to another server (or failed): the caller tries the next.
                return Ok(None);
            }
            if lock_pid(number) == Some(server.child.id())
                && x11rb::connect(Some(&server.name())).is_ok()
            {
                return Ok(Some(server));
            }
            if Instant::now() > deadline {
                return Err(format!("Xvfb :{number} accepted no connection within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The display name, `":N"` (the value for `DISPLAY`).
    pub fn name(&self) -> String {
        format!(":{}", self.number)
    }

    pub fn number(&self) -> u32 {
        self.number
    }
}

impl Drop for VirtualDisplay {
    fn drop(&mut self) {
        self.stop();
        release(self.number);
    }
}

impl VirtualDisplay {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            // Ended (and reaped) already: its pid may be another process's by now.
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child process, which has not been reaped yet.
            unsafe { kill(pid, SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Killed hard: remove what it left, if it is still ours.
        if lock_pid(self.number) == Some(self.child.id()) {
            let _ = std::fs::remove_file(lock_path(self.number));
            let _ = std::fs::remove_file(format!("/tmp/.X11-unix/X{}", self.number));
        }
    }
}

fn claim(number: u32) -> bool {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.contains(&number) {
        return false;
    }
    claimed.push(number);
    true
}

fn release(number: u32) {
    CLAIMED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&n| n != number);
}

fn lock_path(number: u32) -> String {
    format!("/tmp/.X{number}-lock")
}

/// The pid in display `number`'s lock file (X servers write it as text).
fn lock_pid(number: u32) -> Option<u32> {
    std::fs::read_to_string(lock_path(number))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a live X server holds display `number`: its lock file names a running process (an
/// unreadable or half-written lock counts as held).
fn display_in_use(number: u32) -> bool {
    if !Path::new(&lock_path(number)).exists() {
        return false;
    }
    match lock_pid(number) {
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}
