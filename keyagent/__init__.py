"""``hallmark-key``: the program on a user's PC that talks PKCS#11 to their USB key.

It lists what is on the key now; enrolment, the local signing agent and local PDF
signing come with the certificate-login and signing work. It talks to the Hallmark
server only over HTTP and imports only ``hsm`` (and pyHanko) of this project.
"""
