//! The morph pad (GUI THREAD): an XY pad bound to `Morph X` / `Morph Y`, the corners labelled with
//! what the four slots hold. Dragging records automation through the host's parameter gestures
//! (begin, set, end), and host automation moves the dot.

use super::layout::PAD;
use crate::generator::{SLOT_NAMES, Slots};
use crate::plugin::params::DrumVaeParams;
use egui::{Align2, Color32, CornerRadius, FontId, Sense, Stroke, StrokeKind, Ui, pos2};
use nice_plug::prelude::{Param, ParamSetter};

/// Pad coordinates (x right, y down, both 0..1) of a point inside the pad.
pub fn to_unit(p: egui::Pos2) -> (f32, f32) {
    (
        ((p.x - PAD.min.x) / PAD.width()).clamp(0.0, 1.0),
        ((p.y - PAD.min.y) / PAD.height()).clamp(0.0, 1.0),
    )
}

/// Draws the pad and handles dragging.
pub fn show(ui: &mut Ui, params: &DrumVaeParams, setter: &ParamSetter, slots: &Slots) {
    let response = ui.interact(
        PAD,
        ui.scope_id().with("morph-pad"),
        Sense::click_and_drag(),
    );
    if response.drag_started() || response.clicked() {
        setter.begin_set_parameter(&params.morph_x);
        setter.begin_set_parameter(&params.morph_y);
    }
    if (response.dragged() || response.clicked() || response.drag_started())
        && let Some(p) = response.interact_pointer_pos()
    {
        let (x, y) = to_unit(p);
        setter.set_parameter(&params.morph_x, x);
        setter.set_parameter(&params.morph_y, y);
    }
    if response.drag_stopped() || response.clicked() {
        setter.end_set_parameter(&params.morph_x);
        setter.end_set_parameter(&params.morph_y);
    }

    let painter = ui.painter();
    painter.rect_filled(PAD, CornerRadius::same(6), Color32::from_rgb(30, 32, 40));
    painter.rect_stroke(
        PAD,
        CornerRadius::same(6),
        Stroke::new(1.0, Color32::from_gray(90)),
        StrokeKind::Inside,
    );
    for i in 1..4 {
        let t = i as f32 / 4.0;
        let c = Color32::from_gray(48);
        let x = PAD.min.x + t * PAD.width();
        let y = PAD.min.y + t * PAD.height();
        painter.line_segment([pos2(x, PAD.min.y), pos2(x, PAD.max.y)], (1.0, c));
        painter.line_segment([pos2(PAD.min.x, y), pos2(PAD.max.x, y)], (1.0, c));
    }
    let corners = [
        (PAD.left_top(), Align2::LEFT_TOP),
        (PAD.right_top(), Align2::RIGHT_TOP),
        (PAD.left_bottom(), Align2::LEFT_BOTTOM),
        (PAD.right_bottom(), Align2::RIGHT_BOTTOM),
    ];
    for (i, (pos, align)) in corners.into_iter().enumerate() {
        let inset = egui::vec2(
            if align.x() == egui::Align::Min {
                6.0
            } else {
                -6.0
            },
            if align.y() == egui::Align::Min {
                4.0
            } else {
                -4.0
            },
        );
        painter.text(
            pos + inset,
            align,
            format!("{} {}", SLOT_NAMES[i], short(&slots.0[i].to_string())),
            FontId::proportional(12.0),
            Color32::from_gray(200),
        );
    }
    let x = params.morph_x.modulated_normalized_value();
    let y = params.morph_y.modulated_normalized_value();
    let dot = pos2(PAD.min.x + x * PAD.width(), PAD.min.y + y * PAD.height());
    painter.circle_filled(dot, 8.0, Color32::from_rgb(255, 180, 60));
    painter.circle_stroke(dot, 8.0, Stroke::new(1.5, Color32::WHITE));
}

/// A corner label short enough for the pad.
fn short(s: &str) -> String {
    let s = s.trim_start_matches("style:").trim_start_matches("file:");
    if s.chars().count() > 14 {
        format!("{}…", s.chars().take(13).collect::<String>())
    } else {
        s.to_string()
    }
}
