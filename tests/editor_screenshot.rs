//! The editor, rendered for real: starts Xvfb, runs the standalone build (`drumvae-standalone -b
//! dummy`, the plugin and its egui editor on Mesa software OpenGL, playing a simulated transport),
//! reads the window back over X11 and saves it as a PNG (`target/editor-screenshot.png`;
//! `DRUMVAE_BLESS=1` also writes `docs/editor.png`, the README's picture). Then checks that the image
//! is not blank and that the pattern view shows the default pattern: every hit of the pattern the
//! plugin plays at its default parameters is drawn at its cell, and cells without a hit are dark.
//!
//! Needs `Xvfb` and Mesa's software GL (installed by `.ci/run`); the X server is
//! `tests/support/xvfb.rs`'s.

#[path = "support/xvfb.rs"]
mod xvfb;

use candle_core::Device;
use drumvae::generator::{Engine, Point};
use drumvae::groove::{STEPS, VOICES};
use drumvae::plugin::editor::{grid, layout};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat, MapState, Window};

/// Kills a child process when dropped, so a failing test leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The mapped window of the editor's size, searched depth-first from the root.
fn find_editor(conn: &impl Connection, window: Window) -> Option<Window> {
    let tree = conn.query_tree(window).ok()?.reply().ok()?;
    for child in tree.children {
        let attrs = conn.get_window_attributes(child).ok()?.reply().ok()?;
        let geom = conn.get_geometry(child).ok()?.reply().ok()?;
        if attrs.map_state == MapState::VIEWABLE
            && u32::from(geom.width) == layout::WINDOW.x as u32
            && u32::from(geom.height) == layout::WINDOW.y as u32
        {
            return Some(child);
        }
        if let Some(found) = find_editor(conn, child) {
            return Some(found);
        }
    }
    None
}

/// The window's pixels as RGB rows.
fn capture(conn: &impl Connection, window: Window) -> (u32, u32, Vec<u8>) {
    let geom = conn.get_geometry(window).unwrap().reply().unwrap();
    let image = conn
        .get_image(
            ImageFormat::Z_PIXMAP,
            window,
            0,
            0,
            geom.width,
            geom.height,
            u32::MAX,
        )
        .unwrap()
        .reply()
        .unwrap();
    assert_eq!(image.depth, 24, "Xvfb runs at 24 bits (BGRX pixels)");
    let rgb = image
        .data
        .chunks_exact(4)
        .flat_map(|px| [px[2], px[1], px[0]])
        .collect();
    (u32::from(geom.width), u32::from(geom.height), rgb)
}

fn save_png(path: &Path, w: u32, h: u32, rgb: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(rgb)
        .unwrap();
}

fn pixel(rgb: &[u8], w: u32, p: egui::Pos2) -> [u8; 3] {
    let i = (p.y as usize * w as usize + p.x as usize) * 3;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

fn brightness(c: [u8; 3]) -> u32 {
    u32::from(c[0]) + u32::from(c[1]) + u32::from(c[2])
}

#[test]
fn the_editor_shows_the_playing_pattern() {
    let xvfb = xvfb::VirtualDisplay::start().unwrap_or_else(|e| panic!("{e}"));
    let app = Killed(
        Command::new(env!("CARGO_BIN_EXE_drumvae-standalone"))
            .args(["-b", "dummy", "--tempo", "120"])
            .env("DISPLAY", xvfb.name())
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the standalone build runs"),
    );
    let (conn, screen) = x11rb::connect(Some(&xvfb.name())).expect("connects to Xvfb");
    let root = conn.setup().roots[screen].root;
    let deadline = Instant::now() + Duration::from_secs(90);
    let window = loop {
        if let Some(w) = find_editor(&conn, root) {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "the editor window did not appear within 90 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The worker decodes the first pattern and the editor repaints while playing: wait until the
    // grid shows hits (software GL is slow on a small CI machine).
    let pattern = Engine::embedded(&Device::Cpu)
        .unwrap()
        .decode(&Point::default())
        .unwrap()
        .0;
    let hits: Vec<(usize, usize, f32)> = (0..STEPS)
        .flat_map(|s| (0..VOICES).map(move |v| (s, v)))
        .filter_map(|(s, v)| {
            let c = pattern.cells[s][v];
            c.hit.then_some((v, s, c.offset))
        })
        .collect();
    assert!(hits.len() > 20, "the default pattern has hits");
    let background = brightness([
        grid::BACKGROUND.r(),
        grid::BACKGROUND.g(),
        grid::BACKGROUND.b(),
    ]);
    let shown = |rgb: &[u8], w: u32| {
        hits.iter()
            .filter(|&&(v, s, o)| {
                brightness(pixel(rgb, w, layout::hit_center(v, s, o))) > background + 120
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (w, h, rgb) = loop {
        let (w, h, rgb) = capture(&conn, window);
        if shown(&rgb, w) == hits.len() || Instant::now() > deadline {
            break (w, h, rgb);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/editor-screenshot.png");
    save_png(&out, w, h, &rgb);
    if std::env::var_os("DRUMVAE_BLESS").is_some() {
        save_png(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/editor.png"),
            w,
            h,
            &rgb,
        );
    }
    drop(app);

    // Not blank: many distinct colours, not one flat fill.
    let mut colours: Vec<[u8; 3]> = rgb.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 50,
        "the screenshot ({}) looks blank: {} colours",
        out.display(),
        colours.len()
    );
    // Every hit is drawn at its cell...
    assert_eq!(
        shown(&rgb, w),
        hits.len(),
        "not every hit of the pattern is drawn; see {}",
        out.display()
    );
    // ...and cells with no hit of their own or a neighbour (whose shifted hit could reach them)
    // stay dark.
    let hit_at = |v: usize, s: usize| pattern.cells[s % STEPS][v].hit;
    let mut empty = 0;
    let mut dark = 0;
    for v in 0..VOICES {
        for s in 1..STEPS - 1 {
            if !hit_at(v, s - 1) && !hit_at(v, s) && !hit_at(v, s + 1) {
                empty += 1;
                if brightness(pixel(&rgb, w, layout::cell(v, s).center())) < background + 60 {
                    dark += 1;
                }
            }
        }
    }
    assert!(
        dark * 100 >= empty * 97,
        "{dark} of {empty} empty cells are dark; see {}",
        out.display()
    );
}
