//! Chat templates rendered by ganpo (minijinja) against transformers' `apply_chat_template` for
//! real templates: SmolLM2, Qwen3, Llama 3 (fixtures: tools/fixtures/train_fixtures.py).

use ganpo_train::data::{ChatTemplate, Message};
use serde_json::Value;

#[test]
fn real_templates_render_as_transformers_does() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let template = ChatTemplate::new(fixture["templates"][name].as_str().unwrap()).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let got = template
            .render(
                &messages,
                case["add_generation_prompt"].as_bool().unwrap(),
                case["bos_token"].as_str(),
                case["eos_token"].as_str(),
            )
            .unwrap();
        assert_eq!(
            got,
            case["rendered"].as_str().unwrap(),
            "{name}: {messages:?}"
        );
        checked.insert(name.to_string());
    }
    assert_eq!(checked.len(), 3);
}

#[test]
fn template_errors_are_reported() {
    let t = ChatTemplate::new("{{ raise_exception('only user and assistant roles') }}").unwrap();
    let e = t.render(&[], false, None, None).unwrap_err();
    assert!(
        e.to_string().contains("only user and assistant roles"),
        "{e}"
    );
    assert!(ChatTemplate::new("{% for m in messages %}").is_err());
}

#[test]
fn runaway_templates_end_in_an_error_naming_them() {
    let msgs = [Message {
        role: "user".into(),
        content: "hi".into(),
    }];
    // Three nested loops of 100,000: 10^15 iterations, stopped by the instruction budget.
    let spin = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}\
                {% endfor %}{% endfor %}{% endfor %}";
    let t = ChatTemplate::named(spin, "model/tokenizer_config.json").unwrap();
    let e = format!("{:#}", t.render(&msgs, true, None, None).unwrap_err());
    assert!(
        e.contains("model/tokenizer_config.json") && e.contains("instructions"),
        "{e}"
    );
    // 10^9 bytes of output, stopped at the output bound.
    let flood = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}";
    let t = ChatTemplate::named(flood, "model/chat_template.jinja").unwrap();
    let e = format!("{:#}", t.render(&msgs, true, None, None).unwrap_err());
    assert!(
        e.contains("model/chat_template.jinja") && e.contains("bytes"),
        "{e}"
    );
    // A real template over a long conversation stays far inside both.
    let long: Vec<Message> = (0..2000)
        .map(|i| Message {
            role: ["user", "assistant"][i % 2].into(),
            content: format!("message {i}"),
        })
        .collect();
    let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n\
                  {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    let text = ChatTemplate::new(chatml)
        .unwrap()
        .render(&long, true, None, None)
        .unwrap();
    assert!(text.ends_with("<|im_start|>assistant\n") && text.contains("message 1999"));
}

#[test]
fn a_runaway_template_in_a_model_directory_is_named_by_its_file() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy");
    let dir = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures.join(f), dir.path().join(f)).unwrap();
    }
    let jinja = dir.path().join("chat_template.jinja");
    std::fs::write(
        &jinja,
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let tok = ganpo_models::Tokenizer::from_dir(dir.path()).unwrap();
    let pairs = ganpo_train::data::PairTokenizer::new(&tok).unwrap();
    let record = ganpo_train::data::parse_record(&serde_json::json!({
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "yes"}],
        "rejected": [{"role": "assistant", "content": "no"}],
    }))
    .unwrap();
    let e = pairs.tokenize(&record).unwrap_err().to_string();
    assert!(
        e.contains(&jinja.display().to_string()) && e.contains("instructions"),
        "{e}"
    );
}
