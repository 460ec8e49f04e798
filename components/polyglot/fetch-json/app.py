"""fetch-json: GETs a URL and returns its JSON body.

Input:  {"url": "https://...", "secret"?: "name" (default "api_token")}
Output: {"status": 200, "body": <the response body, parsed>}

When the step is granted the secret, the request carries
`Authorization: Bearer <value>`; otherwise it carries no Authorization
header. Redirects are followed (at most 5). A status outside 2xx or a
request that gets no response is an `http_error`, retryable for 5xx and
transport failures, not for 4xx or a host the step may not reach.
"""

from weft_step import StepError, http_request, info, secret, step, url_for_log


def run(input):
    if not isinstance(input, dict) or not isinstance(input.get("url"), str):
        raise StepError("bad_input", 'the input needs "url", a string')
    name = input.get("secret", "api_token")
    if not isinstance(name, str):
        raise StepError("bad_input", '"secret" must be the name of a secret')

    url = input["url"]
    headers = {"accept": "application/json"}
    token = secret(name)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"

    info(f"fetching {url_for_log(url)}")
    response = http_request("GET", url, headers=headers).raise_for_status()
    return {"status": response.status, "body": response.json()}


WitWorld = step(run)
