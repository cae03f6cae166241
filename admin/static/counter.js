// The counter camera: getUserMedia into a <video>, a still into the form's file input (no upload of its own).
// Without a camera (or permission) the file input stays the way to give the photo.
(function () {
  "use strict";
  var form = document.querySelector("form[data-camera]");
  if (!form || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || typeof DataTransfer === "undefined") return;
  var video = document.getElementById("camera-video");
  var shot = document.getElementById("camera-shot");
  var start = document.getElementById("camera-start");
  var take = document.getElementById("camera-take");
  var input = document.getElementById("photo");
  var state = document.getElementById("camera-state");
  var stream = null;

  function stop() {
    if (stream) stream.getTracks().forEach(function (track) { track.stop(); });
    stream = null;
  }

  start.hidden = false;
  start.addEventListener("click", function () {
    navigator.mediaDevices.getUserMedia({ video: true, audio: false }).then(function (media) {
      stream = media;
      video.srcObject = media;
      video.hidden = false;
      take.hidden = false;
      state.textContent = form.dataset.ready || state.textContent;
      take.focus();
    }).catch(function () {
      state.textContent = input.labels[0].textContent;
      input.focus();
    });
  });
  take.addEventListener("click", function () {
    var canvas = document.createElement("canvas");
    canvas.width = video.videoWidth || 640;
    canvas.height = video.videoHeight || 480;
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    canvas.toBlob(function (blob) {
      var files = new DataTransfer();
      files.items.add(new File([blob], "counter-photo.jpg", { type: "image/jpeg" }));
      input.files = files.files;
      shot.src = canvas.toDataURL("image/jpeg", 0.9);
      shot.hidden = false;
      video.hidden = true;
      take.hidden = true;
      stop();
      state.textContent = form.dataset.taken || state.textContent;
      document.getElementById("verify-submit").focus();
    }, "image/jpeg", 0.9);
  });
  window.addEventListener("pagehide", stop);
})();
