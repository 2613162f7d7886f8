//! Built-in dataset presets (`emotion`, `imdb`, `massive`): their label sets with a
//! natural-language description of every label (used in prompts), the directory name under a local
//! `--data-dir`, the splits that exist, and where each split lives on the Hugging Face hub.
//!
//! Label sets are compiled in (never read from a data directory at run time), so a run's label order
//! does not depend on which copy of a dataset was found. Label order is alphabetical.

/// One label of a preset: its name as it appears in the data and a short description for prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresetLabel {
    /// The label string as written in the staged JSONL files.
    pub name: &'static str,
    /// A short natural-language description, e.g. "the user wants to set an alarm".
    pub description: &'static str,
}

/// Where a preset's splits live on the Hugging Face hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLayout {
    /// Dataset repository, `owner/name`.
    pub repo: &'static str,
    /// Path of a split's file inside the repository; `{split}` is replaced by the split name.
    pub file_pattern: &'static str,
    /// Name of the text field in the hub files.
    pub text_field: &'static str,
    /// Name of the label field in the hub files.
    pub label_field: &'static str,
}

impl HubLayout {
    /// The repository path of `split`'s file.
    pub fn file_for(&self, split: &str) -> String {
        self.file_pattern.replace("{split}", split)
    }
}

/// A built-in dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Preset name as given to `--dataset`.
    pub name: &'static str,
    /// One-line description of the task, for prompts and `dataset-info`.
    pub task: &'static str,
    /// Directory of the dataset under `--data-dir` (`DIR/<local_dir>/<split>.jsonl`).
    pub local_dir: &'static str,
    /// Splits that exist in the original dataset.
    pub splits: &'static [&'static str],
    /// The label set, alphabetical.
    pub labels: &'static [PresetLabel],
    /// Label names by integer id, for files that store labels as integers (the hub's Parquet files).
    pub integer_labels: Option<&'static [&'static str]>,
    /// Where the splits live on the hub.
    pub hub: HubLayout,
}

impl Preset {
    /// The label names in label-set order.
    pub fn label_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.labels.iter().map(|label| label.name)
    }
}

/// Every built-in preset.
pub const PRESETS: &[Preset] = &[EMOTION, IMDB, MASSIVE];

/// Finds a preset by name (exact, lower case).
pub fn find_preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

/// Comma-separated preset names, for error messages.
pub fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|preset| preset.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// dair-ai/emotion (CARER): English tweets with six basic emotions.
const EMOTION: Preset = Preset {
    name: "emotion",
    task: "Which emotion does the author of this English Twitter message express?",
    local_dir: "emotion",
    splits: &["train", "validation", "test"],
    labels: &[
        PresetLabel {
            name: "anger",
            description: "the writer feels angry, irritated, annoyed or resentful",
        },
        PresetLabel {
            name: "fear",
            description: "the writer feels afraid, anxious, nervous or worried",
        },
        PresetLabel {
            name: "joy",
            description: "the writer feels happy, cheerful, pleased or content",
        },
        PresetLabel {
            name: "love",
            description:
                "the writer feels love, affection, tenderness or longing for someone or something",
        },
        PresetLabel {
            name: "sadness",
            description: "the writer feels sad, lonely, hurt, discouraged or disappointed",
        },
        PresetLabel {
            name: "surprise",
            description: "the writer feels surprised, amazed, astonished or curious",
        },
    ],
    // ClassLabel order of the dataset card: 0 sadness, 1 joy, 2 love, 3 anger, 4 fear, 5 surprise.
    integer_labels: Some(&["sadness", "joy", "love", "anger", "fear", "surprise"]),
    hub: HubLayout {
        repo: "dair-ai/emotion",
        file_pattern: "split/{split}-00000-of-00001.parquet",
        text_field: "text",
        label_field: "label",
    },
};

/// The IMDB Large Movie Review Dataset (aclImdb v1.0): polar movie reviews.
const IMDB: Preset = Preset {
    name: "imdb",
    task: "Is the sentiment of this IMDB movie review negative or positive?",
    local_dir: "imdb",
    splits: &["train", "test"],
    labels: &[
        PresetLabel {
            name: "negative",
            description:
                "the reviewer disliked the movie (an unfavourable review, rating 4/10 or lower)",
        },
        PresetLabel {
            name: "positive",
            description:
                "the reviewer liked the movie (a favourable review, rating 7/10 or higher)",
        },
    ],
    // ClassLabel order of the dataset card: 0 neg, 1 pos (named negative/positive here, as staged).
    integer_labels: Some(&["negative", "positive"]),
    hub: HubLayout {
        repo: "stanfordnlp/imdb",
        file_pattern: "plain_text/{split}-00000-of-00001.parquet",
        text_field: "text",
        label_field: "label",
    },
};

/// Amazon MASSIVE en-US intent classification: 60 intents of voice-assistant requests.
const MASSIVE: Preset = Preset {
    name: "massive",
    task: "What does the user want from the voice assistant with this request?",
    local_dir: "massive_en_us",
    splits: &["train", "validation", "test"],
    labels: MASSIVE_INTENTS,
    integer_labels: None,
    hub: HubLayout {
        repo: "SetFit/amazon_massive_intent_en-US",
        file_pattern: "{split}.jsonl",
        text_field: "text",
        // The hub JSONL also has an integer `label`; `label_text` holds the intent name.
        label_field: "label_text",
    },
};

/// Builds a [`PresetLabel`] from a name and a description.
const fn intent(name: &'static str, description: &'static str) -> PresetLabel {
    PresetLabel { name, description }
}

/// The 60 MASSIVE intents of the en-US train split, alphabetical.
const MASSIVE_INTENTS: &[PresetLabel] = &[
    intent(
        "alarm_query",
        "the user asks which alarms are set or when an alarm will ring",
    ),
    intent(
        "alarm_remove",
        "the user wants to cancel or delete an alarm",
    ),
    intent(
        "alarm_set",
        "the user wants to set an alarm or a wake-up call",
    ),
    intent("audio_volume_down", "the user wants the volume turned down"),
    intent(
        "audio_volume_mute",
        "the user wants the device to be quiet, mute its sound or pause",
    ),
    intent(
        "audio_volume_other",
        "the user wants to see or change the volume or audio settings in another way",
    ),
    intent("audio_volume_up", "the user wants the volume turned up"),
    intent(
        "calendar_query",
        "the user asks about events, meetings or reminders in their calendar",
    ),
    intent(
        "calendar_remove",
        "the user wants to delete or cancel a calendar event or reminder",
    ),
    intent(
        "calendar_set",
        "the user wants to add a calendar event, meeting or reminder",
    ),
    intent(
        "cooking_query",
        "the user asks a general question about cooking or what to cook",
    ),
    intent(
        "cooking_recipe",
        "the user wants a recipe, its ingredients or cooking instructions",
    ),
    intent(
        "datetime_convert",
        "the user wants a time converted between time zones or formats",
    ),
    intent(
        "datetime_query",
        "the user asks for the current time or date, here or in another place",
    ),
    intent(
        "email_addcontact",
        "the user wants to add a contact or an email address to their contacts",
    ),
    intent(
        "email_query",
        "the user wants to check, search or read their emails",
    ),
    intent(
        "email_querycontact",
        "the user asks for a contact's details, such as a phone number or email address",
    ),
    intent(
        "email_sendemail",
        "the user wants to write, send or reply to an email",
    ),
    intent(
        "general_greet",
        "the user greets the assistant or asks how it is doing",
    ),
    intent("general_joke", "the user wants to hear a joke"),
    intent(
        "general_quirky",
        "an odd, chatty or off-topic request that fits no specific intent",
    ),
    intent(
        "iot_cleaning",
        "the user wants a robot vacuum or cleaner to clean",
    ),
    intent(
        "iot_coffee",
        "the user wants the coffee machine to make coffee",
    ),
    intent(
        "iot_hue_lightchange",
        "the user wants the colour or mood of the lights changed",
    ),
    intent("iot_hue_lightdim", "the user wants the lights dimmed"),
    intent("iot_hue_lightoff", "the user wants the lights turned off"),
    intent("iot_hue_lighton", "the user wants the lights turned on"),
    intent("iot_hue_lightup", "the user wants the lights made brighter"),
    intent(
        "iot_wemo_off",
        "the user wants a smart plug or socket switched off",
    ),
    intent(
        "iot_wemo_on",
        "the user wants a smart plug or socket switched on",
    ),
    intent(
        "lists_createoradd",
        "the user wants to create a list or add an item to a list",
    ),
    intent(
        "lists_query",
        "the user asks what is on a list or which lists exist",
    ),
    intent(
        "lists_remove",
        "the user wants to remove an item from a list or delete a list",
    ),
    intent(
        "music_dislikeness",
        "the user says they dislike the music or song that is playing",
    ),
    intent(
        "music_likeness",
        "the user says they like a song, an artist or a kind of music",
    ),
    intent(
        "music_query",
        "the user asks about the music that is playing, such as its title or artist",
    ),
    intent(
        "music_settings",
        "the user wants to change music playback settings such as shuffle or repeat",
    ),
    intent("news_query", "the user wants news or headlines"),
    intent(
        "play_audiobook",
        "the user wants to play, resume or control an audiobook",
    ),
    intent("play_game", "the user wants to play a game"),
    intent("play_music", "the user wants music played"),
    intent(
        "play_podcasts",
        "the user wants to play or control a podcast",
    ),
    intent("play_radio", "the user wants to play a radio station"),
    intent(
        "qa_currency",
        "the user asks about exchange rates or converting between currencies",
    ),
    intent(
        "qa_definition",
        "the user asks for the meaning or definition of a word or thing",
    ),
    intent(
        "qa_factoid",
        "the user asks a factual general-knowledge question",
    ),
    intent("qa_maths", "the user asks a maths or arithmetic question"),
    intent(
        "qa_stock",
        "the user asks about share prices or the stock market",
    ),
    intent(
        "recommendation_events",
        "the user wants suggestions for events or things happening nearby",
    ),
    intent(
        "recommendation_locations",
        "the user wants suggestions for places such as restaurants or shops",
    ),
    intent(
        "recommendation_movies",
        "the user wants a movie recommendation",
    ),
    intent(
        "social_post",
        "the user wants to post or send something on social media",
    ),
    intent(
        "social_query",
        "the user asks about activity or updates on social media",
    ),
    intent(
        "takeaway_order",
        "the user wants to order food for delivery or takeaway",
    ),
    intent(
        "takeaway_query",
        "the user asks about takeaway or delivery options or an order's status",
    ),
    intent(
        "transport_query",
        "the user asks about directions, routes or travel information",
    ),
    intent("transport_taxi", "the user wants to book a taxi or a ride"),
    intent(
        "transport_ticket",
        "the user wants to find or book a train, bus or plane ticket",
    ),
    intent(
        "transport_traffic",
        "the user asks about traffic conditions",
    ),
    intent("weather_query", "the user asks about the weather"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn label_sets_are_sorted_unique_and_described() {
        for preset in PRESETS {
            let names: Vec<&str> = preset.label_names().collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(
                names, sorted,
                "labels of {} must be sorted and unique",
                preset.name
            );
            for label in preset.labels {
                assert!(!label.description.trim().is_empty(), "{}", label.name);
            }
        }
    }

    #[test]
    fn label_set_sizes_match_the_datasets() {
        let sizes: Vec<(&str, usize)> = PRESETS.iter().map(|p| (p.name, p.labels.len())).collect();
        assert_eq!(sizes, [("emotion", 6), ("imdb", 2), ("massive", 60)]);
    }

    #[test]
    fn integer_labels_are_a_permutation_of_the_label_set() {
        for preset in PRESETS {
            if let Some(by_id) = preset.integer_labels {
                let ids: HashSet<&str> = by_id.iter().copied().collect();
                let names: HashSet<&str> = preset.label_names().collect();
                assert_eq!(ids, names, "{}", preset.name);
                assert_eq!(by_id.len(), preset.labels.len(), "{}", preset.name);
            }
        }
    }

    #[test]
    fn massive_scenarios_are_the_eighteen_of_massive() {
        let scenarios: HashSet<&str> = MASSIVE_INTENTS
            .iter()
            .map(|intent| intent.name.split('_').next().unwrap_or(intent.name))
            .collect();
        assert_eq!(scenarios.len(), 18);
    }

    #[test]
    fn hub_file_names_follow_the_split() {
        assert_eq!(
            EMOTION.hub.file_for("validation"),
            "split/validation-00000-of-00001.parquet"
        );
        assert_eq!(
            IMDB.hub.file_for("test"),
            "plain_text/test-00000-of-00001.parquet"
        );
        assert_eq!(MASSIVE.hub.file_for("train"), "train.jsonl");
    }

    #[test]
    fn presets_are_found_by_name() {
        assert_eq!(find_preset("imdb").map(|p| p.local_dir), Some("imdb"));
        assert_eq!(
            find_preset("massive").map(|p| p.local_dir),
            Some("massive_en_us")
        );
        assert!(find_preset("Imdb").is_none());
        assert_eq!(preset_names(), "emotion, imdb, massive");
    }
}
