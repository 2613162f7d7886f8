//! Fuzz targets of this crate (driver: tests/support/fuzz.rs; `scripts/fuzz.sh SECONDS`): a
//! GGUF file of any bytes is refused or read (header guard, candle's reader, tokenizer and
//! config from its metadata), never a panic or an allocation the file does not back; a chat
//! template of any source compiles and renders or is an error, and never hangs (fuel).

#[path = "../../../tests/support/fuzz.rs"]
mod driver;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::{ChatMessage, ChatTemplate, LanguageModel, LoadOptions, ModelSpec, Tokenizer};

/// A tiny llama GGUF: a byte-level BPE vocabulary of five tokens and one f32 tensor.
fn gguf_seed() -> Vec<u8> {
    gguf_with_layers(1)
}

/// [`gguf_seed`] claiming `layers` blocks.
fn gguf_with_layers(layers: u32) -> Vec<u8> {
    let tokens: Vec<Value> = ["a", "b", "ab", "<s>", "</s>"].iter().map(|t| Value::String(t.to_string())).collect();
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(8)),
        ("llama.feed_forward_length", Value::U32(16)),
        ("llama.block_count", Value::U32(layers)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", Value::U32(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.merges", Value::Array(vec![Value::String("a b".into())])),
        ("tokenizer.ggml.bos_token_id", Value::U32(3)),
        ("tokenizer.ggml.eos_token_id", Value::U32(4)),
    ];
    let embedding = QTensor::quantize(&Tensor::zeros((5, 8), candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &[("token_embd.weight", &embedding)]).unwrap();
    bytes.into_inner()
}

#[test]
fn fuzz_gguf_reader() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.gguf");
    driver::fuzz("gguf_reader", vec![gguf_seed()], |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let _ = Tokenizer::from_gguf_file(&path);
        let _ = LanguageModel::load(&ModelSpec::Gguf(path.clone()), &LoadOptions::default());
    });
}

#[test]
fn a_gguf_claiming_more_layers_than_tensors_is_refused_before_listing_them() {
    // Found by fuzz_gguf_reader: block_count mutated to ~2^31 made the loader build a name for
    // every tensor of every layer (a hang, then an allocation failure).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layers.gguf");
    std::fs::write(&path, gguf_with_layers(1 << 31)).unwrap();
    let err = LanguageModel::load(&ModelSpec::Gguf(path), &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("llama.block_count") && err.contains("2147483648"), "{err}");
}

#[test]
fn fuzz_chat_template() {
    let seeds = [
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '[INST] ' + m.content | trim + ' [/INST]' }}{% else %}{{ raise_exception('roles') }}{% endif %}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}",
        "{{ strftime_now('%d %B %Y') }}{{ messages[0].content.split(' ')|join('-') }}{{ (messages|length) // 0 }}",
    ];
    driver::fuzz("chat_template", seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), |bytes| {
        if let Ok(template) = ChatTemplate::new(String::from_utf8_lossy(bytes), "<s>", "</s>") {
            let _ = template.render(&[ChatMessage::new("user", "Which emotion? I won!")], true);
        }
    });
}
