//! An operating-system error as a log line says it: `address already in use`, not
//! `Address already in use (os error 98)`. The error number tells an operator nothing the words
//! do not.

/// `e`'s text without its error number, starting lower-case (it follows a colon in messages).
pub fn os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.find(" (os error ").map_or(text.as_str(), |at| &text[..at]);
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::os_error;

    #[test]
    fn the_number_goes_the_words_stay() {
        assert_eq!(os_error(&std::io::Error::from_raw_os_error(98)), "address already in use");
        assert_eq!(os_error(&std::io::Error::from_raw_os_error(2)), "no such file or directory");
        assert_eq!(os_error(&std::io::Error::other("Custom text")), "custom text");
    }
}
