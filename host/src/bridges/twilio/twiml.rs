//! The TwiML documents the bridge answers with. They are small and fixed, so they are written
//! by hand; every value is escaped.

/// Escape text for an XML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn document(body: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>{body}</Response>\n")
}

/// Connect the call to a bidirectional media stream at `url` (`wss://`, no query string: the
/// parameters travel as `<Parameter>`s and come back in the stream's `start`). Twilio reports
/// the stream's errors to `status_callback`.
pub fn connect_stream(url: &str, parameters: &[(&str, &str)], status_callback: &str) -> String {
    let params: String = parameters
        .iter()
        .map(|(name, value)| {
            format!(
                "<Parameter name=\"{}\" value=\"{}\"/>",
                escape(name),
                escape(value)
            )
        })
        .collect();
    document(&format!(
        "<Connect><Stream url=\"{}\" statusCallback=\"{}\" statusCallbackMethod=\"POST\">{params}</Stream></Connect>",
        escape(url),
        escape(status_callback),
    ))
}

/// Refuse the call without answering it: `busy` plays a busy signal, `rejected` a
/// not-in-service tone.
pub fn reject(busy: bool) -> String {
    let reason = if busy { "busy" } else { "rejected" };
    document(&format!("<Reject reason=\"{reason}\"/>"))
}

/// Hand the caller to a phone number or a SIP URI (a transfer).
pub fn dial(target: &str) -> String {
    let inner = if target.starts_with("sip:") || target.starts_with("sips:") {
        format!("<Sip>{}</Sip>", escape(target))
    } else {
        escape(target.strip_prefix("tel:").unwrap_or(target))
    };
    document(&format!("<Dial>{inner}</Dial>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_with_escaped_parameters() {
        let twiml = connect_stream(
            "wss://agents.example.com/twilio/media",
            &[("token", "a\"b<c>&")],
            "https://agents.example.com/twilio/stream-status",
        );
        assert_eq!(
            twiml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Connect><Stream \
             url=\"wss://agents.example.com/twilio/media\" \
             statusCallback=\"https://agents.example.com/twilio/stream-status\" \
             statusCallbackMethod=\"POST\"><Parameter name=\"token\" \
             value=\"a&quot;b&lt;c&gt;&amp;\"/></Stream></Connect></Response>\n"
        );
    }

    #[test]
    fn reject_and_dial() {
        assert!(reject(true).contains("<Reject reason=\"busy\"/>"));
        assert!(reject(false).contains("<Reject reason=\"rejected\"/>"));
        assert!(dial("tel:+4930123").contains("<Dial>+4930123</Dial>"));
        assert!(dial("+4930123").contains("<Dial>+4930123</Dial>"));
        assert!(
            dial("sip:desk@pbx.example.com")
                .contains("<Dial><Sip>sip:desk@pbx.example.com</Sip></Dial>")
        );
    }
}
