"""pytest plugin for gmqtt's MQTT 5 suite: logs every gmqtt client in with wulian's API key.

gmqtt's tests/test_mqtt5.py reads USERNAME and PASSWORD but gives its clients only the
username (`set_auth_credentials(username)`), so it can only log in to brokers that accept a
username without a password. wulian identifies applications by an API key sent as the
password; this plugin supplies WULIAN_MQTT_PASSWORD whenever the suite passes no password.
Nothing else about the clients changes.
"""

import os

import gmqtt

_set_auth_credentials = gmqtt.Client.set_auth_credentials


def _with_api_key(self, username, password=None):
    if password is None:
        password = os.environ.get("WULIAN_MQTT_PASSWORD")
    _set_auth_credentials(self, username, password)


gmqtt.Client.set_auth_credentials = _with_api_key
