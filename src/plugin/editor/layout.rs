//! Where the editor draws what, in logical pixels from the window's top-left corner. Fixed
//! positions (not flowing layout) so the pattern view and the pad never jump around while values
//! change, and so the screenshot test knows where each grid cell is.

use crate::groove::{STEPS, STEPS_PER_BEAT, VOICES};
use egui::{Pos2, Rect, Vec2, pos2, vec2};

/// Window size at first open.
pub const WINDOW: Vec2 = vec2(1060.0, 700.0);
/// Height of the title bar.
pub const HEADER_H: f32 = 40.0;

/// The morph pad (a square).
pub const PAD: Rect = Rect::from_min_max(pos2(16.0, 56.0), pos2(276.0, 316.0));
/// The four corner panels, below the pad.
pub const SLOTS: Rect = Rect::from_min_max(pos2(10.0, 336.0), pos2(284.0, 690.0));

/// Voice names, mutes and note numbers, left of the grid.
pub const VOICE_COLUMN: Rect = Rect::from_min_max(pos2(296.0, 56.0), pos2(412.0, 272.0));
/// Left edge of the pattern grid.
pub const GRID_LEFT: f32 = 412.0;
/// Top edge of the pattern grid.
pub const GRID_TOP: f32 = 56.0;
/// Width of one 16th step.
pub const CELL_W: f32 = 10.0;
/// Height of one voice row.
pub const ROW_H: f32 = 24.0;
/// The whole grid.
pub const GRID: Rect = Rect::from_min_max(
    pos2(GRID_LEFT, GRID_TOP),
    pos2(
        GRID_LEFT + STEPS as f32 * CELL_W,
        GRID_TOP + VOICES as f32 * ROW_H,
    ),
);

/// The parameter sliders, below the grid.
pub const CONTROLS: Rect = Rect::from_min_max(pos2(296.0, 292.0), pos2(1052.0, 560.0));
/// Model choice, export and status, at the bottom right.
pub const FOOTER: Rect = Rect::from_min_max(pos2(296.0, 568.0), pos2(1052.0, 690.0));

/// The cell of `voice` at grid `step`.
pub fn cell(voice: usize, step: usize) -> Rect {
    Rect::from_min_size(
        pos2(
            GRID_LEFT + step as f32 * CELL_W,
            GRID_TOP + voice as f32 * ROW_H,
        ),
        vec2(CELL_W, ROW_H),
    )
}

/// The centre of a hit as drawn: its cell shifted by its micro-timing (`offset` in steps, times
/// the timing amount), so a late hit sits right of its grid line.
pub fn hit_center(voice: usize, step: usize, shifted_steps: f32) -> Pos2 {
    cell(voice, step).center() + vec2(shifted_steps * CELL_W, 0.0)
}

/// Whether `step` starts a beat (drawn with a stronger line).
pub fn is_beat(step: usize) -> bool {
    step.is_multiple_of(STEPS_PER_BEAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_fit_the_window_and_do_not_overlap() {
        let window = Rect::from_min_size(Pos2::ZERO, WINDOW);
        let regions = [PAD, SLOTS, VOICE_COLUMN, GRID, CONTROLS, FOOTER];
        for r in regions {
            assert!(window.contains_rect(r), "{r:?}");
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                assert!(!a.intersects(b.shrink(0.5)), "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(cell(VOICES - 1, STEPS - 1).max, GRID.max);
    }
}
