"""Prompts are counted in the served model's tokens before anything runs, against its context
window; the request's deadline covers prompt processing; memory per request stays bounded at the
largest prompt allowed; ``seed`` is bounded to what the sampler takes.

The model is a 2-layer random-weight Llama with SmolLM2's tokenizer and chat template. Emoji
are the probe's attack: about 3 tokens each, so a prompt far within the character limit can be
far beyond the window."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from agents.backends import transformers as transformers_backend
from agents.backends.base import ChatRequest, ContextLengthExceeded, DeadlineExceeded
from agents.backends.transformers import TransformersBackend
from agents.chat_model import LocalChatModel
from api.server.chat_request import SEED_MAX, SEED_MIN
from api.server.generation import api_error
from tests.agents.fakes import fake_llm
from tests.finetune.test_text_lora import tiny_llama_config

pytestmark = pytest.mark.real_model  # the SmolLM2 tokenizer and chat template

WINDOW = 1024  # the tiny model's max_position_embeddings
MEMORY_WINDOW = 2048
MEMORY_BOUND_MB = 96  # a whole prompt's logits would be ~400 MB (2,040 x 49,152 floats)
COUNTED = re.compile(r"the prompt is ([\d,]+) tokens and max_tokens is ([\d,]+)")


class RecordingBackend(TransformersBackend):
    """The real backend, recording each request it is asked to generate for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[ChatRequest] = []

    def stream(self, request):
        self.requests.append(request)
        yield from super().stream(request)


@pytest.fixture(scope="module")
def tokenizer(model_store):
    return model_store.load_causal_lm("smollm2-135m-instruct")[1]


def tiny_backend(tokenizer, window: int = WINDOW) -> RecordingBackend:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, max_position_embeddings=window))
    return RecordingBackend(model, tokenizer, "tiny")


@pytest.fixture
def backend(tokenizer) -> RecordingBackend:
    return tiny_backend(tokenizer)


@pytest.fixture
def client(make_app, context, backend):
    context.llm = LocalChatModel(backend=backend)
    return make_app(generation_timeout_s=30).test_client()


def chat(client, text: str, **body):
    messages = [{"role": "user", "content": text}]
    return client.post("/v1/chat/completions", json={"model": "base", "messages": messages, **body})


def tokens_of(backend: TransformersBackend, text: str) -> int:
    """``text`` as a user message, in tokens, counted as the API counts a request."""
    return backend.count_tokens(ChatRequest(messages=[{"role": "user", "content": text}]))


def test_the_context_window_is_the_smaller_real_limit_of_config_and_tokenizer(tokenizer, backend):
    # SmolLM2's tokenizer sets no model_max_length (transformers says ~1e30): the config's wins
    assert tokenizer.model_max_length > 10**9
    assert backend.context_window == WINDOW
    window = transformers_backend.context_window
    config = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=8192))
    assert window(config, SimpleNamespace(model_max_length=2048)) == 2048
    assert window(config, SimpleNamespace(model_max_length=int(1e30))) == 8192
    assert window(SimpleNamespace(), SimpleNamespace()) is None


def test_an_emoji_prompt_within_the_character_limit_is_refused_in_tokens_without_the_lock(
    client, backend
):
    text = "\N{GRINNING FACE}" * 400  # 400 characters, ~1,200 tokens: beyond the window
    assert len(text) < 32_000
    prompt = tokens_of(backend, text)
    assert prompt > WINDOW
    answers = []
    with backend._lock:  # another request is generating: counting must not wait for it
        worker = threading.Thread(target=lambda: answers.append(chat(client, text, max_tokens=8)))
        worker.start()
        worker.join(10)
        answered = not worker.is_alive()
    worker.join(30)
    assert answered, "the over-long prompt waited for the model instead of being counted"
    (response,) = answers
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    counted, max_tokens = (
        int(n.replace(",", "")) for n in COUNTED.search(error["message"]).groups()
    )
    assert (counted, max_tokens) == (prompt, 8)
    assert f"context window of {WINDOW:,} tokens" in error["message"]
    assert "shorten the messages or lower max_tokens" in error["message"]
    assert backend.requests == []  # the model never saw it


def test_max_tokens_must_fit_beside_the_prompt(client, backend):
    text = "Hood bolt torque? " + "\N{GRINNING FACE}" * 310
    room = WINDOW - tokens_of(backend, text)
    assert 1 < room < 100
    over = chat(client, text, max_tokens=room + 1)
    assert over.status_code == 400
    assert over.get_json()["error"]["code"] == "context_length_exceeded"
    assert backend.requests == []

    fits = chat(client, text, max_tokens=room)
    assert fits.status_code == 200
    usage = fits.get_json()["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= WINDOW
    (request,) = backend.requests
    assert request.max_tokens == room


def test_without_max_tokens_the_default_is_cut_to_the_room_left(client, backend):
    text = "\N{GRINNING FACE}" * 320
    room = WINDOW - tokens_of(backend, text)
    assert 0 < room < 256  # below the model's default max_tokens
    assert chat(client, text).status_code == 200
    (request,) = backend.requests
    assert request.max_tokens == room


def test_the_backend_refuses_a_prompt_that_fills_the_window_without_waiting(backend):
    # what the API's count cannot see (retrieved text, an agent's tool results) is checked here
    request = ChatRequest(
        messages=[{"role": "user", "content": "\N{GRINNING FACE}" * 400}], max_tokens=1
    )
    with ThreadPoolExecutor(1) as pool:
        with backend._lock:  # another request is generating
            future = pool.submit(lambda: next(backend.stream(request)))
            done = wait([future], timeout=10).done
        assert done, "the over-long prompt waited for the model"
        with pytest.raises(ContextLengthExceeded) as raised:
            future.result()
    assert raised.value.window == WINDOW and raised.value.prompt_tokens > WINDOW
    error = api_error(raised.value, 30)
    assert (error.status, error.code) == (400, "context_length_exceeded")


def test_an_answer_ends_where_the_window_does(backend):
    # a graph's prompt can be longer than the request's (retrieved text): the answer is cut
    text = "\N{GRINNING FACE}" * 330
    room = WINDOW - tokens_of(backend, text)
    assert 0 < room < 16
    request = ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=100)
    final = list(backend.stream(request))[-1]
    assert final.finish_reason == "length"
    assert final.usage.output_tokens == room


def test_the_timeout_stops_prompt_processing(make_app, context, backend, monkeypatch):
    """A prompt that alone takes longer than the timeout is stopped between its chunks."""
    monkeypatch.setattr(transformers_backend, "PREFILL_CHUNK", 32)
    seen = []

    def slow(_module, args, kwargs):
        tokens = kwargs["input_ids"].shape[1]
        seen.append(tokens)
        time.sleep(0.01 * tokens)  # like a big model on a CPU: 300 tokens take 3 s

    backend.model.register_forward_pre_hook(slow, with_kwargs=True)
    context.llm = LocalChatModel(backend=backend)
    client = make_app(generation_timeout_s=1).test_client()
    text = "\N{GRINNING FACE}" * 100
    prompt = tokens_of(backend, text)
    response = chat(client, text, max_tokens=4)
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "timeout"
    assert sum(seen) < prompt  # the model never saw the whole prompt


def test_a_deadline_passed_while_waiting_for_the_model_stops_before_the_prompt(backend):
    calls = []
    backend.model.register_forward_pre_hook(lambda *_: calls.append(1))
    request = ChatRequest(
        messages=[{"role": "user", "content": "Hood?"}], deadline=time.monotonic() - 1
    )
    with pytest.raises(DeadlineExceeded):
        list(backend.stream(request))
    assert calls == []
    error = api_error(DeadlineExceeded("late"), 30)
    assert (error.status, error.code) == (504, "timeout")


def test_a_prompt_in_chunks_answers_as_in_one_pass(tokenizer, monkeypatch):
    request = ChatRequest(
        messages=[{"role": "user", "content": "Wheel nut torque? " * 20}], max_tokens=12
    )
    backend = tiny_backend(tokenizer)
    assert backend.count_tokens(request) > 64

    def answer() -> str:
        return "".join(event.text for event in backend.stream(request))

    monkeypatch.setattr(transformers_backend, "PREFILL_CHUNK", 10**6)
    whole = answer()
    monkeypatch.setattr(transformers_backend, "PREFILL_CHUNK", 16)
    assert answer() == whole and whole


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)")
def test_memory_stays_bounded_at_the_largest_prompt_allowed(tokenizer):
    """The worst case a request may bring: a prompt that fills the window but for its answer.
    Sampled RSS may grow by the KV cache and one chunk's work, never by prompt x vocabulary."""
    backend = tiny_backend(tokenizer, MEMORY_WINDOW)
    max_tokens = 8
    emoji = "\N{GRINNING FACE}"
    text = emoji * ((MEMORY_WINDOW - max_tokens) // 3)
    while tokens_of(backend, text) + max_tokens > MEMORY_WINDOW:
        text = text[:-1]
    request = ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=max_tokens)
    prompt = backend.count_tokens(request)
    assert prompt > MEMORY_WINDOW - max_tokens - 3

    warm = ChatRequest(messages=[{"role": "user", "content": "Hood?"}], max_tokens=2)
    list(backend.stream(warm))  # first-call allocations are not the request's
    baseline = _rss_mb()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        events = list(backend.stream(request))
    finally:
        done.set()
        sampler.join()
    assert events[-1].usage.input_tokens == prompt
    assert peak - baseline < MEMORY_BOUND_MB, f"grew {peak - baseline:.0f} MB"


def test_seed_is_bounded_to_what_the_sampler_takes(make_app, context, tokenizer):
    context.llm = fake_llm()
    client = make_app().test_client()
    for seed in (2**64, SEED_MAX + 1, SEED_MIN - 1):
        response = chat(client, "Hood?", seed=seed)
        assert response.status_code == 400, seed
        error = response.get_json()["error"]
        assert error["param"] == "seed" and str(SEED_MAX) in error["message"]
    assert context.llm.backend.requests == []

    # the bounds themselves sample on the real backend
    backend = tiny_backend(tokenizer)
    context.llm = LocalChatModel(backend=backend)
    client = make_app().test_client()
    for seed in (SEED_MIN, SEED_MAX, 0):
        response = chat(client, "Hood?", seed=seed, temperature=1.0, max_tokens=3)
        assert response.status_code == 200, seed
    assert [r.seed for r in backend.requests] == [SEED_MIN, SEED_MAX, 0]
