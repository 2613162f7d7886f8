//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
//! `tokenizer_config.json`) rendered with minijinja the way Hugging Face transformers renders
//! it (trim_blocks, lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, Python
//! string methods), and a plain fallback for models without one.

use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The turn's text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

/// Instructions a template may execute per render: real chat templates take a few thousand
/// per conversation turn.
const TEMPLATE_FUEL: u64 = 10_000_000;

/// A chat template with the special token strings it may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The Jinja source, or `None` for the plain fallback.
    source: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from Jinja source. It is compiled once here so syntax errors surface early.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let template = Self {
            source: Some(source.into()),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        };
        template.environment()?;
        Ok(template)
    }

    /// The plain fallback for models without a template: `role: content` lines, and
    /// `assistant:` when a generation prompt is asked for.
    pub fn plain() -> Self {
        Self {
            source: None,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }

    /// The Jinja source, `None` for the plain fallback.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Render a conversation; `add_generation_prompt` appends the opening of an assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let Some(_) = &self.source else {
            return Ok(render_plain(messages, add_generation_prompt));
        };
        let env = self.environment()?;
        let template = env.get_template("chat").map_err(template_error)?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(template_error)
    }

    fn environment(&self) -> Result<Environment<'static>> {
        let mut env = Environment::new();
        // Templates come from model files: a template that loops without end runs out of
        // fuel (an error) instead of hanging the run.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        if let Some(source) = &self.source {
            env.add_template_owned("chat", source.clone())
                .map_err(template_error)?;
        }
        Ok(env)
    }
}

fn template_error(e: minijinja::Error) -> InferError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    InferError::ChatTemplate(message)
}

fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` of HF templates, on the current UTC date and time. Supports the
/// directives templates use: `%d %m %Y %y %b %B %H %M %S %%`.
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?
        .as_secs();
    format_utc(seconds, &format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn format_utc(unix_seconds: u64, format: &str) -> std::result::Result<String, minijinja::Error> {
    let (year, month, day) = civil_from_days((unix_seconds / 86_400) as i64);
    let secs_of_day = unix_seconds % 86_400;
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('H') => out.push_str(&format!("{:02}", secs_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs_of_day % 60)),
            Some('%') => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

fn render_plain(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for message in messages {
        out.push_str(&format!("{}: {}\n", message.role, message.content));
    }
    if add_generation_prompt {
        out.push_str("assistant:");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nDefault<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_default_system() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let text = t.render(&[ChatMessage::user("Hi")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nDefault<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let with_system = t
            .render(&[ChatMessage::system("S"), ChatMessage::user("Hi")], false)
            .unwrap();
        assert_eq!(
            with_system,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn supports_hf_template_idioms() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
                   [{{ m.content.strip() | upper }}]{{ m | tojson }}{% endfor %}{{ eos_token }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let text = t
            .render(
                &[ChatMessage::system("x"), ChatMessage::user("  a b ")],
                false,
            )
            .unwrap();
        assert_eq!(text, r#"<s>[A B]{"role":"user","content":"  a b "}</s>"#);
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let source = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let err = template.render(&[ChatMessage::new("user", "hi")], true).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn syntax_errors_surface_at_construction() {
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(InferError::ChatTemplate(_))
        ));
    }

    #[test]
    fn formats_dates_like_strftime() {
        // 2024-02-29 13:05:09 UTC = 1709211909.
        assert_eq!(
            format_utc(1_709_211_909, "%d %b %Y %H:%M:%S %%").unwrap(),
            "29 Feb 2024 13:05:09 %"
        );
        assert_eq!(
            format_utc(0, "%Y-%m-%d %B %y").unwrap(),
            "1970-01-01 January 70"
        );
    }

    #[test]
    fn plain_fallback() {
        let text = ChatTemplate::plain()
            .render(&[ChatMessage::user("Hi")], true)
            .unwrap();
        assert_eq!(text, "user: Hi\nassistant:");
    }
}
