import pytest

from accounts import pictures


@pytest.fixture
def decode_slots_taken(settings):
    """Every picture decode slot of this process held, as by concurrent uploads; a short wait for one."""
    settings.HERD_PICTURE_DECODE_WAIT_SECONDS = 0.05
    for _ in range(settings.HERD_PICTURE_DECODES):
        assert pictures._decode_slots.acquire(blocking=False)
    yield
    for _ in range(settings.HERD_PICTURE_DECODES):
        pictures._decode_slots.release()
