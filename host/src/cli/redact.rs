//! Redis URLs as they may be printed and logged: never with their password.

/// The `--redis` URL checked and fit to print: `Ok` with its password
/// replaced by `***`, or `Err` saying why it is not usable, without the URL
/// (one that does not parse may hold its password anywhere).
pub(crate) fn printable_redis_url(url: &str) -> Result<String, String> {
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(_) => Ok(redact_url(url)),
        // redis-rs describes what is wrong without quoting the URL.
        Err(e) => Err(format!("the Redis URL is not usable ({e})")),
    }
}

/// `url` with its password replaced by `***`: the one in the userinfo
/// (`redis://user:***@host:6379/0`) and a `pass` or `password` query value
/// (`redis+unix:///run/redis.sock?pass=***`). The user name stays.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // As in a URL parser: the authority ends at the first `/`, `?` or `#`,
    // and its userinfo at the last `@` in it.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    format!("{scheme}{authority}{}", redact_query(tail))
}

/// The path, query and fragment of a URL, with password parameters redacted.
fn redact_query(tail: &str) -> String {
    let Some((path, after)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let (query, fragment) = match after.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (after, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if matches!(key, "pass" | "password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect();
    let mut out = format!("{path}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_replaced_and_the_rest_kept() {
        for (url, shown) in [
            (
                "redis://user:hunter2@10.0.0.1:6379/2",
                "redis://user:***@10.0.0.1:6379/2",
            ),
            ("redis://:hunter2@redis:6379", "redis://:***@redis:6379"),
            ("rediss://u:p%40ss@[::1]:6380", "rediss://u:***@[::1]:6380"),
            // A URL parser takes the last `@` of the authority.
            ("redis://u:p@ss@host", "redis://u:***@host"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://user@host:6379/0", "redis://user@host:6379/0"),
            (
                "redis://host/0?protocol=resp3#insecure",
                "redis://host/0?protocol=resp3#insecure",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&user=u&pass=hunter2",
                "redis+unix:///run/redis.sock?db=1&user=u&pass=***",
            ),
            (
                "redis://:hunter2@host/?password=hunter2#x",
                "redis://:***@host/?password=***#x",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("hunter2"), "{url}");
        }
    }

    #[test]
    fn an_unusable_url_is_not_repeated() {
        for url in [
            "redis://user:hunter2@host:notaport",
            "redis://user:hunter2@host/notadb",
            "redis://user:hun#ter2@host",
            "redis://user:hunter2@0.0.0.0:6379",
            "hunter2",
        ] {
            let message = printable_redis_url(url).expect_err(url);
            assert!(!message.contains("hunter2"), "{url}: {message}");
        }
        assert_eq!(
            printable_redis_url("redis://user:hunter2@127.0.0.1:1/0").unwrap(),
            "redis://user:***@127.0.0.1:1/0"
        );
    }
}
