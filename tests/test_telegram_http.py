"""PTB's requests on aiohttp (bot/channels/telegram_http.py), over real HTTP to the fake Bot API."""

from __future__ import annotations

import socket

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import NetworkError

from bot.channels.telegram_http import AiohttpRequest
from tests.fake_telegram import TOKEN, FakeBotApi


async def test_messages_and_uploads_reach_the_bot_api() -> None:
    fake = FakeBotApi()
    root = await fake.start()
    await fake.text(4242, "/start")  # the chat exists once its user wrote to the bot
    try:
        async with Bot(TOKEN, base_url=f"{root}/bot", request=AiohttpRequest(2)) as bot:
            keys = InlineKeyboardMarkup([[InlineKeyboardButton("Bəli ✓", callback_data="c:yes")]])
            sent = await bot.send_message(4242, "Salam, dünya ✓", reply_markup=keys)
            await bot.send_document(4242, b"%PDF-1.7 evidence", filename="case.pdf", caption="c1")
        assert sent.text == "Salam, dünya ✓" and sent.reply_markup == keys
        # A JSON body (numbers stay numbers), as the Bot API takes for a method without files.
        assert ("sendMessage", {"chat_id": 4242, "text": "Salam, dünya ✓"}) in [
            (m, {k: p[k] for k in ("chat_id", "text") if k in p}) for m, p in fake.calls
        ]
        (document,) = fake.documents
        assert document["data"] == b"%PDF-1.7 evidence" and document["name"] == "case.pdf"
        assert document["caption"] == "c1"
    finally:
        await fake.stop()


async def test_a_network_error_names_no_url_and_so_no_token() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    request = AiohttpRequest(1, connect_timeout=2)
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as caught:
            await request.post(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe")
    finally:
        await request.shutdown()
    assert TOKEN not in str(caught.value) and str(port) not in str(caught.value)
    assert "aiohttp.Client" in str(caught.value)
