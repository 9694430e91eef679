//! The four corner panels (GUI THREAD): what each corner holds, with controls to re-roll its seed,
//! choose a style, load a MIDI file (a path field: file dialogs on Linux need a desktop portal or
//! GTK, which many studio machines and every headless test lack), and audition it alone. Edits go
//! to the persisted slots (and are counted as session edits for the host, see
//! `plugin::session_edits`); the worker picks them up at its next poll.

use crate::generator::{Command, Link, SLOT_COUNT, SLOT_NAMES, Slot};
use crate::plugin::params::DrumVaeParams;
use egui::{Color32, RichText, Ui};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// GUI-only text the panels keep between frames.
#[derive(Default)]
pub struct SlotsPanelState {
    /// The MIDI path typed for each corner.
    pub paths: [String; SLOT_COUNT],
}

/// A fresh seed from the current time (re-roll), mixed so consecutive clicks differ widely.
fn new_seed(old: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (old ^ nanos).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 44
}

/// Draws the panels.
pub fn show(ui: &mut Ui, params: &DrumVaeParams, link: &Link, state: &mut SlotsPanelState) {
    let styles = link.with_status(|s| s.styles.clone());
    let selected = params
        .selected_slot
        .load(Ordering::Relaxed)
        .min(SLOT_COUNT - 1);
    let audition = params.audition.load(Ordering::Relaxed);
    for (i, name) in SLOT_NAMES.iter().enumerate() {
        let slot = params.slots.read().0[i].clone();
        let frame = egui::Frame::group(ui.style()).stroke(egui::Stroke::new(
            1.0,
            if i == selected {
                Color32::from_rgb(255, 180, 60)
            } else {
                Color32::from_gray(70)
            },
        ));
        frame.show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                if ui
                    .selectable_label(i == selected, RichText::new(name.to_string()).strong())
                    .clicked()
                    && i != selected
                {
                    params.selected_slot.store(i, Ordering::Relaxed);
                    params.field_edits.note();
                }
                let mut new_slot = None;
                match &slot {
                    Slot::Seed { seed } => {
                        ui.label(format!("seed {seed}"));
                        if ui
                            .button("re-roll")
                            .on_hover_text("a new random groove")
                            .clicked()
                        {
                            new_slot = Some(Slot::Seed {
                                seed: new_seed(*seed),
                            });
                        }
                    }
                    Slot::Style { name } => {
                        ui.label(format!("style {name}"));
                    }
                    Slot::File { name, .. } => {
                        ui.label(format!("file {name}"));
                    }
                    Slot::Unreadable { reason, .. } => {
                        ui.label("unreadable")
                            .on_hover_text(format!("from the saved session: {reason}"));
                    }
                }
                let current_style = match &slot {
                    Slot::Style { name } => name.clone(),
                    _ => "style…".to_string(),
                };
                egui::ComboBox::from_id_salt(("style", i))
                    .selected_text(current_style)
                    .width(70.0)
                    .show_ui(ui, |ui| {
                        for style in &styles {
                            if ui.selectable_label(false, style).clicked() {
                                new_slot = Some(Slot::Style {
                                    name: style.clone(),
                                });
                            }
                        }
                        if ui.selectable_label(false, "random seed").clicked() {
                            new_slot = Some(Slot::Seed { seed: new_seed(0) });
                        }
                    });
                let solo = audition == i as i32;
                if ui
                    .selectable_label(solo, "solo")
                    .on_hover_text("play this corner alone")
                    .clicked()
                {
                    params
                        .audition
                        .store(if solo { -1 } else { i as i32 }, Ordering::Relaxed);
                }
                if let Some(s) = new_slot
                    && s != slot
                {
                    params.slots.write().0[i] = s;
                    params.field_edits.note();
                }
            });
            ui.horizontal(|ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut state.paths[i])
                        .hint_text("path/to/groove.mid")
                        .desired_width(190.0),
                );
                if ui.button("load").clicked() && !state.paths[i].trim().is_empty() {
                    let sent = link.send(Command::LoadMidi {
                        slot: i,
                        path: PathBuf::from(state.paths[i].trim()),
                        window: 0,
                    });
                    if sent.is_err() {
                        ui.label("busy, try again");
                    }
                }
            });
        });
    }
}
