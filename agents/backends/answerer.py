"""A backend as an evaluation's answerer (:data:`finetune.evaluation.Answerer`): greedy
answers, several questions at a time so that the engine batches them, each with its own
latency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from agents.backends.base import Backend, ChatRequest
from finetune.evaluation import Answerer, Generated


def backend_answerer(backend: Backend, workers: int) -> Answerer:
    """Greedy answers of ``backend``, ``workers`` questions at a time (the engine batches
    them), with each question's own latency."""

    def one(messages: list[dict[str, str]], name: str | None, tokens: int) -> Generated:
        started = time.perf_counter()
        request = ChatRequest(messages=messages, max_tokens=tokens, adapter=name)
        events = list(backend.stream(request))
        text = "".join(event.text for event in events).strip()
        stopped = events[-1].finish_reason == "stop"
        return Generated(text, stopped, (time.perf_counter() - started) * 1000)

    def answer(conversations, name, tokens, progress):
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(one, messages, name, tokens) for messages in conversations]
            results = []
            for future in futures:
                results.append(future.result())
                progress(1)
        return results

    return answer
