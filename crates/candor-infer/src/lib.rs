//! Local inference on candle for Candor: loading a model, tokenizing, rendering its chat
//! template, scoring label strings exactly and generating verbalized distributions.
