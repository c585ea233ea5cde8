/* moire-generation-panel-private.h — what the files of the generation panel share: its
 * instance struct, property and signal ids, and the functions one part calls in another.
 * Not installed, not for the panel's users (they have moire-generation-panel.h). */
#pragma once

#include <glib/gi18n-lib.h>
#include <math.h>
#include <string.h>

#include "moire-generation-panel.h"
#include "moire-gui-util.h"
#include "moire-job.h"
#include "moire-model-chooser.h"
#include "moire-seed.h"

#define THUMBNAIL_SIZE 96

G_BEGIN_DECLS

struct _MoireGenerationPanel
{
  GtkWidget             parent_instance;

  MoireGenSettings     *settings;
  MoireHistory         *history;
  GSettings            *gsettings;
  GtkStringList        *sampler_labels;
  GtkEntryCompletion   *prompt_completion;
  GtkEntryCompletion   *negative_completion;
  GtkListStore         *suggestions;
  GRand                *rand;

  MoireModelHandle     *model;
  MoireVaeHandle       *vae;
  char                 *vae_path;
  GCancellable         *vae_cancellable;
  GCancellable         *model_cancellable;
  gboolean              apply_defaults_on_load;

  MoireJob             *job;
  GQueue                queue;             /* MoireJob waiting to run, oldest first */
  gboolean              can_queue;
  gboolean              has_last_seed;
  guint64               last_seed;
  gint64                job_started_us;
  int                   pause_at_step;
  gboolean              live_preview;
  int                   preview_interval;
  GHashTable           *warnings_shown;

  moire_image          *init_image;
  moire_image          *mask;
  MoireHistoryItem     *current_item;

  /* DMCMC and its stream; the routing overlay. */
  gboolean              stream;
  int                   stream_rounds;     /* test hook: 0 = until cancelled */
  int                   stream_round;      /* rounds of the running stream so far */
  int                   stream_nfe, stream_one_off;
  moire_sampler         sampler_before_dmcmc; /* zero-initialised: MOIRE_SAMPLER_DEFAULT */
  gboolean              syncing_dmcmc;
  gboolean              show_routing;
  GtkStringList        *integrator_names;

  /* Template children */
  GtkRevealer          *banner_revealer;
  GtkWidget            *banner;
  GtkImage             *banner_icon;
  GtkLabel             *banner_label;
  GtkButton            *banner_button;
  GtkEntry             *prompt_entry;
  GtkLabel             *prompt_hint;
  GtkEntry             *negative_entry;
  MoireModelChooser    *model_chooser;
  GtkLabel             *model_info;
  GtkWidget            *vae_box;
  GtkLabel             *vae_label;
  GtkDropDown          *sampler_dropdown;
  GtkDropDown          *schedule_dropdown;
  GtkSpinButton        *steps_spin;
  GtkSpinButton        *cfg_spin;
  GtkSpinButton        *width_spin;
  GtkSpinButton        *height_spin;
  GtkSpinButton        *batch_spin;
  GtkSpinButton        *seed_spin;
  GtkDropDown          *seed_mode_dropdown;
  GtkLabel             *init_label;
  GtkWidget            *strength_box;
  GtkScale             *strength_scale;
  GtkCheckButton       *live_preview_check;
  GtkWidget            *extensions_box;
  GtkLabel             *dmcmc_label;
  GtkSwitch            *dmcmc_switch;
  GtkWidget            *stream_box;
  GtkSwitch            *stream_switch;
  GtkExpander          *dmcmc_expander;
  GtkSpinButton        *dmcmc_eta_spin;
  GtkSpinButton        *dmcmc_skip_spin;
  GtkDropDown          *dmcmc_integrator_dropdown;
  GtkSpinButton        *dmcmc_steps_spin;
  GtkButton            *generate_button;
  GtkButton            *cancel_button;
  GtkWidget            *queue_box;
  GtkLabel             *notice_label;
  GtkLabel             *queue_label;
  GtkScrolledWindow    *sidebar_scroller;
  GtkStack             *preview_stack;
  GtkPicture           *preview_picture;
  GtkLabel             *preview_badge;
  GtkProgressBar       *progress_bar;
  GtkLabel             *progress_label;
  GtkWidget            *overlay_toggles_box;
  GtkCheckButton       *routing_check;
  GtkLabel             *routing_legend;
  GtkListView          *history_view;
  GtkLabel             *result_label;
};

enum {
  PROP_0,
  PROP_SETTINGS,
  PROP_HISTORY,
  PROP_MODEL,
  PROP_BUSY,
  PROP_LIVE_PREVIEW,
  PROP_PREVIEW_INTERVAL,
  PROP_STREAM,
  PROP_SHOW_ROUTING,
  PROP_VAE_PATH,
  N_PROPS
};

enum {
  SIGNAL_GENERATE_REQUESTED,
  SIGNAL_PREVIEW_FRAME,
  SIGNAL_RESULT_READY,
  SIGNAL_FINISHED,
  SIGNAL_PAUSED,
  N_SIGNALS
};

/* A dropdown that picks one of a fixed list of names (sampler, schedule, DMCMC integrator) is
 * bound to the settings' string through that list's two look-ups. */
typedef struct
{
  guint       (*index_of) (const char *name);
  const char *(*name_at)  (guint index);
} NameList;

extern GParamSpec *panel_properties[N_PROPS];
extern guint panel_signals[N_SIGNALS];

void
panel_show_error_with_action (MoireGenerationPanel *self,
                              const char           *message,
                              const char           *button_label,
                              const char           *action);

void
panel_update_vae_row (MoireGenerationPanel *self);

void
panel_start_next_queued (MoireGenerationPanel *self);

void
panel_show_item (MoireGenerationPanel *self,
                 MoireHistoryItem     *item);

void
panel_on_history_activate (GtkListView          *view,
                           guint                 position,
                           MoireGenerationPanel *self);

void
panel_on_history_changed (MoireGenerationPanel *self);

void
panel_setup_history_row (GtkSignalListItemFactory *factory,
                         GtkListItem              *list_item,
                         gpointer                  user_data);

void
panel_bind_history_row (GtkSignalListItemFactory *factory,
                        GtkListItem              *list_item,
                        gpointer                  user_data);

void
panel_update_actions (MoireGenerationPanel *self);

void
panel_action_generate (GtkWidget  *widget,
                       const char *action_name,
                       GVariant   *parameter);

void
panel_action_cancel (GtkWidget  *widget,
                     const char *action_name,
                     GVariant   *parameter);

void
panel_action_choose_model (GtkWidget  *widget,
                           const char *action_name,
                           GVariant   *parameter);

void
panel_action_choose_init_image (GtkWidget  *widget,
                                const char *action_name,
                                GVariant   *parameter);

void
panel_action_clear_init_image (GtkWidget  *widget,
                               const char *action_name,
                               GVariant   *parameter);

void
panel_action_open_image (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter);

void
panel_action_save_image (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter);

void
panel_action_choose_vae (GtkWidget  *widget,
                         const char *action_name,
                         GVariant   *parameter);

void
panel_action_clear_vae (GtkWidget  *widget,
                        const char *action_name,
                        GVariant   *parameter);

void
panel_action_clear_queue (GtkWidget  *widget,
                          const char *action_name,
                          GVariant   *parameter);

void
panel_action_clear_history (GtkWidget  *widget,
                            const char *action_name,
                            GVariant   *parameter);

void
panel_action_dismiss_banner (GtkWidget  *widget,
                             const char *action_name,
                             GVariant   *parameter);

gboolean
panel_name_to_index (GBinding     *binding,
                     const GValue *from,
                     GValue       *to,
                     gpointer      user_data);

gboolean
panel_index_to_name (GBinding     *binding,
                     const GValue *from,
                     GValue       *to,
                     gpointer      user_data);

gboolean
panel_enum_to_index (GBinding     *binding,
                     const GValue *from,
                     GValue       *to,
                     gpointer      user_data);

gboolean
panel_index_to_enum (GBinding     *binding,
                     const GValue *from,
                     GValue       *to,
                     gpointer      user_data);

void
panel_sync_dmcmc_widgets (MoireGenerationPanel *self);

void
panel_on_sampler_changed (MoireGenerationPanel *self);

void
panel_on_dmcmc_switch_active (MoireGenerationPanel *self);

void
panel_on_show_routing_changed (MoireGenerationPanel *self);

void
panel_bind_spin (MoireGenerationPanel *self,
                 GtkSpinButton        *spin,
                 const char           *property,
                 gboolean              has_default);

void
panel_update_prompt_marks (MoireGenerationPanel *self);

GtkEntryCompletion *
panel_attach_completion (MoireGenerationPanel *self,
                         GtkEntry             *entry);

G_END_DECLS
