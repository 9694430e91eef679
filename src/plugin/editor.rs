//! The plugin's editor (GUI THREAD), built with nice-plug-egui: the pattern view, the morph pad
//! with the four corners, the shaping controls, the model and its status, and MIDI export. It reads
//! the worker's status (a `parking_lot` lock the audio thread never takes) and the audio thread's
//! [`PlayState`] atomics, and sends commands with `try_send`: it never waits on the worker.
//! It repaints continuously while the transport runs, so the playhead moves.

pub mod grid;
pub mod layout;
pub mod pad;
pub mod slots_panel;

use super::params::{DrumVaeParams, EDITOR_SIZE};
use super::player::PlayState;
use super::session_edits::EditReporter;
use crate::generator::{Command, Link};
use crate::groove::{Pattern, STEPS, STEPS_PER_BEAT, VOICES};
use egui::{Color32, RichText, Ui, UiBuilder};
use nice_plug::context::gui::GuiContext;
use nice_plug::editor::dpi::{LogicalSize, NativeSize};
use nice_plug::editor::{HostMethods, SpawnedEditor};
use nice_plug::prelude::*;
use nice_plug_egui::widgets::ParamSlider;
use nice_plug_egui::{
    EguiEditor, EguiEditorHandle, EguiEditorState, EguiNiceSettings, NiceEguiApp, RepaintNotifier,
};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;

/// Voice labels for the rows, in model order.
const VOICE_SHORT: [&str; VOICES] = ["BD", "SD", "HH", "OH", "LT", "MT", "HT", "CR", "RD"];

/// The editor's state: shared handles plus GUI-only fields.
pub struct EditorApp {
    params: Arc<DrumVaeParams>,
    link: Link,
    play: Arc<PlayState>,
    gui: Option<GuiContext>,
    /// Which session edits the host has been told of.
    edits: EditReporter,
    slots: slots_panel::SlotsPanelState,
    model_path: String,
    export_path: String,
    export_bars: u32,
    /// The scale factor (physical pixels per logical pixel) of the last window, 1 before the
    /// first: what [`DrumVaeEditor::size`] reports a closed editor's size at.
    scale_factor: f64,
}

/// The plugin's editor (what `Plugin::editor` returns).
///
/// nice-plug calls `Plugin::editor` once, when the instance is created: before the host restores
/// a saved session. An [`EguiEditor`] fixes its window size when it is built (its
/// [`EguiEditorState`] has no setter), so this type builds a fresh one each time the host opens
/// the editor ([`Editor::spawn`]), from the persisted `editor-size` as it is then, and answers
/// [`Editor::size`] from it while no window is open: a session reopens at the size it was saved
/// with. The open window's handle is nice-plug-egui's own, so parameter, state and scale-factor
/// notifications reach the window unchanged. The [`EditorApp`] (GUI-only text such as the export
/// path) is shared by every window the instance opens.
pub struct DrumVaeEditor {
    params: Arc<DrumVaeParams>,
    app: Arc<Mutex<EditorApp>>,
    repaint: RepaintNotifier,
    /// The egui editor of the window open now (or last): `size()` asks it while it is open.
    spawned: Mutex<Option<Spawned>>,
}

struct Spawned {
    editor: EguiEditor<SharedApp>,
    state: Arc<EguiEditorState>,
}

/// The editor does not resize: its layout is fixed ([`layout`]).
const RESIZE_HINT: ResizeHint = ResizeHint::NON_RESIZABLE;

/// Builds the editor the host opens.
pub fn create(params: Arc<DrumVaeParams>, link: Link, play: Arc<PlayState>) -> DrumVaeEditor {
    let export_path = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("drumvae-export.mid"))
        .unwrap_or_else(|| PathBuf::from("drumvae-export.mid"))
        .display()
        .to_string();
    DrumVaeEditor {
        app: Arc::new(Mutex::new(EditorApp {
            params: params.clone(),
            link,
            play,
            gui: None,
            edits: EditReporter::default(),
            slots: Default::default(),
            model_path: String::new(),
            export_path,
            export_bars: 4,
            scale_factor: 1.0,
        })),
        params,
        repaint: RepaintNotifier::new(),
        spawned: Mutex::new(None),
    }
}

impl DrumVaeEditor {
    /// The persisted editor size (logical pixels); the default for a nonsensical one.
    fn persisted_size(&self) -> (u32, u32) {
        let (w, h) = *self.params.editor_size.read();
        if (200..=16_384).contains(&w) && (200..=16_384).contains(&h) {
            (w, h)
        } else {
            EDITOR_SIZE
        }
    }

    /// The window size the next open gets: the persisted size at the last window's scale factor.
    fn size_at_next_open(&self) -> NativeSize<u32> {
        let (w, h) = self.persisted_size();
        let scale = self.app.lock().scale_factor;
        NativeSize::from_size(LogicalSize::new(w as f32, h as f32).into(), scale)
    }
}

impl Editor for DrumVaeEditor {
    type Handle = EguiEditorHandle;

    fn spawn(
        &self,
        parent: Option<ParentWindowHandle>,
        wait_for_parent: bool,
        fallback_scale_factor: Option<f64>,
        gui_context: GuiContext,
        host: Option<HostMethods>,
    ) -> Result<SpawnedEditor<Self::Handle>, Box<dyn std::error::Error>> {
        let (w, h) = self.persisted_size();
        let state = EguiEditorState::from_size(LogicalSize::new(w as f32, h as f32), 1.0);
        let editor = nice_plug_egui::create_egui_editor(
            state.clone(),
            self.repaint.clone(),
            EguiNiceSettings::new()
                .with_tile("DrumVAE")
                .with_resize_hint(RESIZE_HINT),
            SharedApp(self.app.clone()),
        )
        .expect("create_egui_editor always returns an editor");
        // The wrapper drops the previous window's handle before it opens the next one.
        let spawned = editor.spawn(
            parent,
            wait_for_parent,
            fallback_scale_factor,
            gui_context,
            host,
        )?;
        *self.spawned.lock() = Some(Spawned { editor, state });
        Ok(spawned)
    }

    fn size(&self) -> NativeSize<u32> {
        match &*self.spawned.lock() {
            Some(open) if open.state.is_open() => open.editor.size(),
            _ => self.size_at_next_open(),
        }
    }

    fn resize_hint(&self) -> ResizeHint {
        RESIZE_HINT
    }

    fn track_info_updated(&self, info: TrackInfo) {
        self.app.lock().track_info_changed(info);
        self.repaint.request_repaint();
    }

    unsafe fn assume_standalone_in_process(&self) {
        // SAFETY: the caller upholds `Editor::assume_standalone_in_process`'s contract, which is
        // baseview's (nice-plug-egui's editor does the same).
        unsafe { nice_plug_egui::baseview::assume_standalone_in_process() }
    }
}

/// The [`EditorApp`] shared by the windows of one instance (each window is a new
/// [`EguiEditor`], which owns its app).
struct SharedApp(Arc<Mutex<EditorApp>>);

impl NiceEguiApp for SharedApp {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        self.0.lock().build(egui_ctx, gui, frame)
    }

    fn ui(&mut self, ui: &mut Ui, frame: &mut nice_plug_egui::Frame) {
        self.0.lock().ui(ui, frame);
    }

    fn resized(&mut self, size: nice_plug_egui::baseview::WindowSize) {
        self.0.lock().resized(size);
    }

    fn zoom_factor_changed(&mut self, zoom_factor: f32) {
        self.0.lock().zoom_factor_changed(zoom_factor);
    }

    fn editor_closed(&mut self) {
        self.0.lock().editor_closed();
    }

    fn track_info_changed(&mut self, info: TrackInfo) {
        self.0.lock().track_info_changed(info);
    }
}

impl NiceEguiApp for EditorApp {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        gui: GuiContext,
        _frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        egui_ctx.set_visuals(egui::Visuals::dark());
        self.gui = Some(gui);
        // What the session holds now (a state may have been restored since the last open).
        self.model_path = self
            .params
            .model_path
            .read()
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok(())
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut nice_plug_egui::Frame) {
        let Some(gui) = self.gui.clone() else {
            return;
        };
        let setter = gui.param_setter();
        // The worker decodes previews of the pad position while this window shows them.
        self.link.want_preview();
        // Edits of the corners and the model since the last frame (made here or by the worker)
        // reach the host as an edit of the hidden `Session edits` parameter.
        self.edits.report(
            &self.params.field_edits,
            &self.params.session_edits,
            &setter,
        );
        self.header(ui);
        let slots = self.params.slots.read().clone();
        pad::show(ui, &self.params, &setter, &slots);
        ui.scope_builder(UiBuilder::new().max_rect(layout::SLOTS), |ui| {
            slots_panel::show(ui, &self.params, &self.link, &mut self.slots);
        });
        self.voices(ui, &setter);
        self.pattern(ui);
        ui.scope_builder(UiBuilder::new().max_rect(layout::CONTROLS), |ui| {
            self.controls(ui, &setter);
        });
        ui.scope_builder(UiBuilder::new().max_rect(layout::FOOTER), |ui| {
            self.footer(ui);
        });
        if self.play.playing() {
            ui.ctx().request_repaint();
        }
    }

    fn resized(&mut self, size: nice_plug_egui::baseview::WindowSize) {
        let l = size.logical;
        *self.params.editor_size.write() = (l.width.round() as u32, l.height.round() as u32);
        self.scale_factor = size.scale_factor;
    }

    fn editor_closed(&mut self) {
        self.gui = None;
    }
}

impl EditorApp {
    /// Chooses the model file (`None`: the embedded model); a change is a session edit.
    fn set_model_path(&self, path: Option<PathBuf>) {
        let mut current = self.params.model_path.write();
        if *current != path {
            *current = path;
            self.params.field_edits.note();
        }
    }

    fn header(&self, ui: &mut Ui) {
        let rect = egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(layout::WINDOW.x, layout::HEADER_H),
        );
        ui.painter().rect_filled(
            rect,
            egui::CornerRadius::ZERO,
            Color32::from_rgb(34, 36, 44),
        );
        ui.scope_builder(
            UiBuilder::new().max_rect(rect.shrink2(egui::vec2(12.0, 8.0))),
            |ui| {
                ui.horizontal(|ui| {
                    ui.label(RichText::new("DrumVAE").size(20.0).strong());
                    ui.label(RichText::new("neural drum grooves").color(Color32::from_gray(150)));
                });
            },
        );
    }

    fn voices(&self, ui: &mut Ui, setter: &ParamSetter) {
        let mutes = self.params.mute_params();
        let keys = self.params.key_params();
        for v in 0..VOICES {
            let row = egui::Rect::from_min_size(
                egui::pos2(
                    layout::VOICE_COLUMN.min.x,
                    layout::GRID_TOP + v as f32 * layout::ROW_H,
                ),
                egui::vec2(layout::VOICE_COLUMN.width(), layout::ROW_H),
            );
            ui.scope_builder(UiBuilder::new().max_rect(row), |ui| {
                ui.horizontal_centered(|ui| {
                    ui.label(
                        RichText::new(VOICE_SHORT[v])
                            .color(grid::VOICE_COLORS[v])
                            .monospace(),
                    );
                    let mut muted = mutes[v].value();
                    if ui.checkbox(&mut muted, "").on_hover_text("mute").changed() {
                        setter.begin_set_parameter(mutes[v]);
                        setter.set_parameter(mutes[v], muted);
                        setter.end_set_parameter(mutes[v]);
                    }
                    let mut key = keys[v].value();
                    let drag = ui.add(egui::DragValue::new(&mut key).range(0..=127).speed(0.2));
                    if drag.drag_started() {
                        setter.begin_set_parameter(keys[v]);
                    }
                    if drag.changed() {
                        if !drag.dragged() {
                            setter.begin_set_parameter(keys[v]);
                        }
                        setter.set_parameter(keys[v], key);
                        if !drag.dragged() {
                            setter.end_set_parameter(keys[v]);
                        }
                    }
                    if drag.drag_stopped() {
                        setter.end_set_parameter(keys[v]);
                    }
                });
            });
        }
    }

    /// The playing and waiting patterns, from the worker's recent list and the audio thread's
    /// generations; before playback starts, the newest pattern. With nothing waiting, the preview
    /// of the pad position (what the next switch point plays if the values stay) waits.
    fn patterns(&self) -> (Option<Pattern>, Option<Pattern>) {
        let (playing, waiting) = self.play.generations();
        self.link.with_status(|s| {
            let find = |g: u64| s.recent.iter().find(|(n, _)| *n == g).map(|(_, p)| *p);
            let newest = s.recent.last().map(|(_, p)| *p);
            let now = if playing == 0 {
                newest
            } else {
                find(playing).or(newest)
            };
            let next = if waiting == 0 { None } else { find(waiting) };
            let preview = s.preview.as_ref().map(|(_, p)| *p);
            (now, next.or(preview))
        })
    }

    fn pattern(&self, ui: &mut Ui) {
        let (playing, waiting) = self.patterns();
        let settings = self.params.settings();
        let playhead = self
            .play
            .beat()
            .filter(|_| self.play.playing())
            .map(|beat| {
                let steps = beat * STEPS_PER_BEAT as f64
                    - f64::from(settings.bar_offset) * crate::groove::STEPS_PER_BAR as f64;
                steps.rem_euclid(STEPS as f64)
            });
        grid::paint(
            ui.painter(),
            playing.as_ref(),
            waiting.as_ref(),
            settings.timing_amount,
            settings.mutes,
            playhead,
        );
    }

    fn controls(&self, ui: &mut Ui, setter: &ParamSetter) {
        let p = &self.params;
        egui::Grid::new("controls")
            .num_columns(4)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let row =
                    |ui: &mut Ui, a: (&str, &dyn Fn(&mut Ui)), b: (&str, &dyn Fn(&mut Ui))| {
                        ui.label(a.0);
                        (a.1)(ui);
                        ui.label(b.0);
                        (b.1)(ui);
                        ui.end_row();
                    };
                row(
                    ui,
                    ("Morph X", &|ui| {
                        ui.add(ParamSlider::for_param(&p.morph_x, setter));
                    }),
                    ("Morph Y", &|ui| {
                        ui.add(ParamSlider::for_param(&p.morph_y, setter));
                    }),
                );
                row(
                    ui,
                    ("Temperature", &|ui| {
                        ui.add(ParamSlider::for_param(&p.temperature, setter));
                    }),
                    ("Seed", &|ui| {
                        ui.add(ParamSlider::for_param(&p.seed, setter));
                    }),
                );
                row(
                    ui,
                    ("Density", &|ui| {
                        ui.add(ParamSlider::for_param(&p.density, setter));
                    }),
                    ("Dynamics", &|ui| {
                        ui.add(ParamSlider::for_param(&p.dynamics, setter));
                    }),
                );
                row(
                    ui,
                    ("Timing", &|ui| {
                        ui.add(ParamSlider::for_param(&p.timing, setter));
                    }),
                    ("Swing", &|ui| {
                        ui.add(ParamSlider::for_param(&p.swing, setter));
                    }),
                );
                row(
                    ui,
                    ("Note length", &|ui| {
                        ui.add(ParamSlider::for_param(&p.note_length, setter));
                    }),
                    ("Bar offset", &|ui| {
                        ui.add(ParamSlider::for_param(&p.bar_offset, setter));
                    }),
                );
                row(
                    ui,
                    ("Switch at", &|ui| {
                        ui.add(ParamSlider::for_param(&p.switch_at, setter));
                    }),
                    ("MIDI channel", &|ui| {
                        ui.add(ParamSlider::for_param(&p.channel, setter));
                    }),
                );
            });
    }

    fn footer(&mut self, ui: &mut Ui) {
        let status = self.link.status();
        ui.horizontal(|ui| {
            ui.label("Model");
            ui.add(
                egui::TextEdit::singleline(&mut self.model_path)
                    .hint_text("built-in model (or a .safetensors path)")
                    .desired_width(320.0),
            );
            if ui.button("load").clicked() {
                let path = self.model_path.trim();
                self.set_model_path((!path.is_empty()).then(|| PathBuf::from(path)));
            }
            if ui.button("built-in").clicked() {
                self.model_path.clear();
                self.set_model_path(None);
            }
        });
        let state = if status.model.is_empty() {
            "loading…".to_string()
        } else {
            format!(
                "{} on {}, ready{}",
                status.model,
                status.device,
                status
                    .last_decode
                    .map(|d| format!(" (last decode {:.1} ms)", d.as_secs_f64() * 1e3))
                    .unwrap_or_default()
            )
        };
        ui.label(RichText::new(state).color(Color32::from_gray(170)));
        ui.horizontal(|ui| {
            ui.label("Export");
            ui.add(egui::TextEdit::singleline(&mut self.export_path).desired_width(320.0));
            ui.add(
                egui::DragValue::new(&mut self.export_bars)
                    .range(1..=256)
                    .suffix(" bars"),
            );
            if ui
                .button("export .mid")
                .on_hover_text(
                    "writes what plays now, from bar 1; drag and drop into the DAW is not \
                     available (baseview has no drag source on Linux)",
                )
                .clicked()
            {
                let _ = self.link.send(Command::Export {
                    path: PathBuf::from(self.export_path.trim()),
                    bars: self.export_bars,
                    tempo_bpm: self.play.tempo().unwrap_or(120.0),
                    settings: self.params.settings(),
                });
            }
        });
        if let Some(message) = status.messages.last() {
            ui.label(RichText::new(message).color(Color32::from_rgb(240, 190, 110)));
        }
    }
}
