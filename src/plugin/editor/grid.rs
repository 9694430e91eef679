//! The pattern view (GUI THREAD): 9 voices x 64 steps, velocity as brightness, micro-timing as a
//! horizontal shift, the pattern waiting for the bar line drawn faintly as outlines, and the
//! playhead.

use super::layout::{self, CELL_W, GRID, ROW_H};
use crate::groove::{Pattern, STEPS, VOICES};
use egui::{Color32, CornerRadius, Painter, Rect, Stroke, StrokeKind, pos2, vec2};

/// One hue per voice, in model order (kick, snare, hats, toms, cymbals).
pub const VOICE_COLORS: [Color32; VOICES] = [
    Color32::from_rgb(255, 110, 80),
    Color32::from_rgb(255, 200, 70),
    Color32::from_rgb(120, 220, 120),
    Color32::from_rgb(80, 200, 200),
    Color32::from_rgb(110, 150, 255),
    Color32::from_rgb(150, 130, 255),
    Color32::from_rgb(200, 120, 255),
    Color32::from_rgb(255, 120, 200),
    Color32::from_rgb(230, 230, 230),
];
/// Background of the grid.
pub const BACKGROUND: Color32 = Color32::from_rgb(24, 25, 30);

/// Scales a colour's brightness for a velocity in `0..=1` (never fully dark, so soft hits show).
pub fn velocity_color(voice: usize, velocity: f32) -> Color32 {
    let c = VOICE_COLORS[voice];
    let k = 0.35 + 0.65 * velocity.clamp(0.0, 1.0);
    Color32::from_rgb(
        (f32::from(c.r()) * k) as u8,
        (f32::from(c.g()) * k) as u8,
        (f32::from(c.b()) * k) as u8,
    )
}

/// Draws the grid lines, the playing pattern, the waiting one and the playhead.
pub fn paint(
    painter: &Painter,
    playing: Option<&Pattern>,
    waiting: Option<&Pattern>,
    timing_amount: f32,
    mutes: [bool; VOICES],
    playhead_step: Option<f64>,
) {
    painter.rect_filled(GRID, CornerRadius::ZERO, BACKGROUND);
    for voice in 0..VOICES {
        if voice % 2 == 1 {
            let row = Rect::from_min_max(
                pos2(GRID.min.x, GRID.min.y + voice as f32 * ROW_H),
                pos2(GRID.max.x, GRID.min.y + (voice + 1) as f32 * ROW_H),
            );
            painter.rect_filled(row, CornerRadius::ZERO, Color32::from_rgb(30, 31, 37));
        }
    }
    for step in 0..=STEPS {
        let x = GRID.min.x + step as f32 * CELL_W;
        let color = if step % 16 == 0 {
            Color32::from_gray(110)
        } else if layout::is_beat(step) {
            Color32::from_gray(64)
        } else {
            Color32::from_gray(40)
        };
        painter.line_segment([pos2(x, GRID.min.y), pos2(x, GRID.max.y)], (1.0, color));
    }
    let size = vec2(CELL_W - 2.0, ROW_H - 6.0);
    if let Some(p) = playing {
        for (step, row) in p.cells.iter().enumerate() {
            for (voice, cell) in row.iter().enumerate().filter(|(_, c)| c.hit) {
                let center = layout::hit_center(voice, step, cell.offset * timing_amount);
                let mut color = velocity_color(voice, cell.velocity);
                if mutes[voice] {
                    color = color.gamma_multiply(0.25);
                }
                painter.rect_filled(
                    Rect::from_center_size(center, size),
                    CornerRadius::same(2),
                    color,
                );
            }
        }
    }
    if let Some(p) = waiting {
        for (step, row) in p.cells.iter().enumerate() {
            for (voice, cell) in row.iter().enumerate().filter(|(_, c)| c.hit) {
                let center = layout::hit_center(voice, step, cell.offset * timing_amount);
                painter.rect_stroke(
                    Rect::from_center_size(center, size + vec2(2.0, 2.0)),
                    CornerRadius::same(2),
                    Stroke::new(1.0, VOICE_COLORS[voice].gamma_multiply(0.6)),
                    StrokeKind::Middle,
                );
            }
        }
    }
    if let Some(step) = playhead_step {
        let x = GRID.min.x + (step as f32) * CELL_W;
        painter.line_segment(
            [pos2(x, GRID.min.y - 4.0), pos2(x, GRID.max.y + 4.0)],
            (2.0, Color32::WHITE),
        );
    }
}
