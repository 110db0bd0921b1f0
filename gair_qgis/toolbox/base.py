"""Shared base of GAIR algorithms: one engine job per run (in the engine's own process, engine_jobs.run_job) with
its progress, log and cancel bridged to QgsProcessingFeedback; model resolution from parameters or settings;
user-facing validation; layer-to-path materialisation and output clean-up."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .. import resources_path

GROUPS = {"embeddings": "Embeddings", "analysis": "Analysis", "model": "Model"}
MODEL_HELP = (
    "GAIR model: the official checkpoint (.pth), a bundle folder (pick its config.json) or an exported ONNX model. "
    "Empty: the model set in Plugins > GAIR > GAIR settings."
)


class EngineBridge:
    """Engine callbacks over a feedback: progress(fraction) maps into [start, end] of the bar, cancel() polls it."""

    def __init__(self, feedback: QgsProcessingFeedback | None, start: float = 0.0, end: float = 1.0) -> None:
        self.feedback, self.start, self.end = feedback, start, end

    def progress(self, fraction: float) -> None:
        if self.feedback is not None:
            fraction = min(max(float(fraction), 0.0), 1.0)
            self.feedback.setProgress(100.0 * (self.start + (self.end - self.start) * fraction))

    def cancel(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()


class GAIRAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set OPERATION (an engine.params operation id: the algorithm's id, title, help and scalar
    parameters come from its definition) and GROUP, and implement initAlgorithm, optionally `validate`, and
    `run_engine(parameters, context, feedback, bridge) -> results`, which builds the operation's parameters (engine
    names, JSON values, file paths) and runs it with `run_job` in the engine's process; results come back as JSON.
    PLUGIN_ONLY names the scalar parameters that are the plugin's own (e.g. "set as the GAIR model")."""

    OPERATION = ""
    GROUP = "analysis"
    MODEL = "MODEL"
    PLUGIN_ONLY: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._outputs_written: list[str] = []
        self._run: tuple | None = None  # (parameters, context) of the running call, for output_name

    # --- identity -------------------------------------------------------------------------------------------
    @property
    def operation(self):
        from .parameters import operation

        return operation(self.OPERATION)

    def name(self) -> str:
        return self.OPERATION

    def displayName(self) -> str:  # noqa: N802
        return self.tr(self.operation.title)

    def group(self) -> str:
        return self.tr(GROUPS[self.GROUP])

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(self.operation.help)

    def icon(self) -> QIcon:
        return QIcon(resources_path("icon.png"))

    def createInstance(self) -> GAIRAlgorithm:  # noqa: N802
        return type(self)()

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("GAIR", text)

    # --- parameters -----------------------------------------------------------------------------------------
    def addParameter(self, parameter, createOutput: bool = True) -> bool:  # noqa: N802, N803
        """As QGIS's, except that a file destination defaulting to .html (the training report) is declared as a
        plain file output: an HTML output makes the algorithm dialog say "HTML output has been generated" after
        every run, failed ones included."""
        if createOutput and isinstance(parameter, QgsProcessingParameterFileDestination) \
                and parameter.defaultFileExtension().lower() in ("html", "htm"):
            name, description = parameter.name(), parameter.description()
            return super().addParameter(parameter, False) and self.addOutput(QgsProcessingOutputFile(name, description))
        return super().addParameter(parameter, createOutput)

    def add_engine_parameters(self, *names: str) -> None:
        """The operation's scalar parameters (all the toolbox offers, or those named), from engine.params."""
        from .parameters import scalar_parameter, toolbox_scalars

        op = self.operation
        for param in [op.param(n) for n in names] if names else toolbox_scalars(op):
            self.addParameter(scalar_parameter(param, self.tr))

    def engine_values(self, parameters, context: QgsProcessingContext, *names: str) -> dict:
        """Engine keyword arguments of the operation's scalar parameters (all the toolbox offers, or those named)."""
        from .parameters import scalar_value, toolbox_scalars

        op = self.operation
        chosen = [op.param(n) for n in names] if names else toolbox_scalars(op)
        return {param.name: scalar_value(self, param, parameters, context) for param in chosen}

    def add_pca_from_parameter(self) -> None:
        """PCA_FROM: reduce through another raster's projection (a .pca.npz or an embedding raster): one space."""
        pca_from = self.operation.param("pca_from")
        param = QgsProcessingParameterFile(
            pca_from.processing_name, self.tr(pca_from.label), optional=True,
            fileFilter="Embedding rasters or PCA (*.tif *.tiff *.vrt *.npz);;All files (*)")
        param.setHelp(self.tr(pca_from.help))
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def extent_values(self, parameters, context: QgsProcessingContext, crs=None) -> tuple:
        """(extent, extent_crs) engine values of the EXTENT parameter: (None, None) when empty; in `crs` (a
        layer's; extent_crs None then: the raster's own), else in the CRS the extent was given in."""
        if not parameters.get("EXTENT"):
            return None, None
        given = crs if crs is not None else self.parameterAsExtentCrs(parameters, "EXTENT", context)
        box = self.parameterAsExtent(parameters, "EXTENT", context, given)
        extent = (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
        return extent, (None if crs is not None else (given.authid() or given.toWkt()))

    def add_model_parameter(self) -> None:
        param = QgsProcessingParameterFile(
            self.MODEL, self.tr(self.operation.param("model").label), optional=True,
            fileFilter="GAIR models (*.pth *.pt *.ckpt *.onnx config.json);;All files (*)",
        )
        param.setHelp(MODEL_HELP)
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def add_space_parameter(self) -> None:
        """'Same space as embedding raster': the feature vectors go through that raster's PCA."""
        from qgis.core import QgsProcessingParameterRasterLayer

        space = self.operation.param("space")
        param = QgsProcessingParameterRasterLayer(space.processing_name, self.tr(space.label), optional=True)
        param.setHelp(self.tr(space.help))
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def space_path(self, parameters, context: QgsProcessingContext) -> str | None:
        return self.raster_path(parameters, "SPACE", context) if parameters.get("SPACE") else None

    def add_layer_input(self) -> None:
        """INPUT: the vector layer of a per-feature embedding operation (any geometry)."""
        from qgis.core import QgsProcessing, QgsProcessingParameterFeatureSource

        self.addParameter(QgsProcessingParameterFeatureSource("INPUT", self.tr(self.operation.param("layer").label),
                                                              [QgsProcessing.TypeVectorAnyGeometry]))

    def add_layer_output(self) -> None:
        """EMBEDDED (count) and OUTPUT (the GeoPackage) of a per-feature embedding operation."""
        from qgis.core import QgsProcessingOutputNumber, QgsProcessingParameterVectorDestination

        self.addOutput(QgsProcessingOutputNumber("EMBEDDED", self.tr("Features embedded")))
        self.addParameter(QgsProcessingParameterVectorDestination("OUTPUT",
                                                                  self.tr(self.operation.param("output").label)))

    def model_params(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        """The job's model parameters (the Model parameter, else GAIR settings); the official checkpoint is made
        available first (asking before a download)."""
        from ..settings import ensure_official_checkpoint, model_params

        path = self.parameterAsFile(parameters, self.MODEL, context) if self.MODEL in parameters else None
        params = model_params(path or None)
        try:
            ensure_official_checkpoint(params, lambda op, values: self.run_job(values, feedback, op))
        except RuntimeError as exc:
            raise QgsProcessingException(str(exc)) from None
        return params

    def job_callbacks(self, feedback: QgsProcessingFeedback | None, bridge: EngineBridge | None = None) -> tuple:
        """(progress, cancel, log) of an engine job over a feedback: progress fills the bar (within the bridge's
        range), log lines reach the Processing log, Cancel stops the job."""
        bridge = bridge or EngineBridge(feedback)

        def progress(fraction: float, message: str = "") -> None:
            bridge.progress(fraction)
            if message and feedback is not None:
                feedback.setProgressText(message)

        def log(level: str, message: str) -> None:
            if feedback is None:
                return
            if level in ("warning", "error"):
                feedback.pushWarning(message)
            elif message.startswith("crop "):
                feedback.setProgressText(message)  # "crop i/n, ~m:ss left": by the bar and in the log
            else:
                feedback.pushInfo(message)

        return progress, bridge.cancel, log

    def run_job(self, params: dict, feedback: QgsProcessingFeedback | None, op: str | None = None,
                bridge: EngineBridge | None = None):
        """Run the engine operation (this algorithm's, or `op`) in the engine process; its result (JSON values)."""
        from ..engine_jobs import run_job

        progress, cancel, log = self.job_callbacks(feedback, bridge)
        return run_job(op or self.OPERATION, params, progress, log, cancel)

    def raster_path(self, parameters, name: str, context: QgsProcessingContext) -> str:
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.tr(f"Choose a raster layer for '{name}'."))
        return raster_layer_path(layer)

    def vector_path(self, parameters, name: str, context: QgsProcessingContext, feedback) -> str:
        """A GeoPackage/shapefile path for the engine; memory, temporary, filtered or database layers (and
        'selected features only') are first written to a temporary GeoPackage."""
        return self.parameterAsCompatibleSourceLayerPath(
            parameters, name, context, ["gpkg", "shp", "geojson", "fgb"], "gpkg", feedback
        )

    # --- validation -----------------------------------------------------------------------------------------
    def checkParameterValues(self, parameters, context):  # noqa: N802
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            problem = None
            if self.parameterDefinition(self.MODEL) is not None:
                from ..settings import model_problem

                problem = model_problem(self.parameterAsFile(parameters, self.MODEL, context))
            problem = problem or self.validate(parameters, context)
        except QgsProcessingException as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - an engine answer or any other failure: show its text
            problem = str(exc)
        return (problem is None), (problem or "")

    def validate(self, parameters, context: QgsProcessingContext) -> str | None:
        """Return a message a GIS user understands when the inputs cannot work, else None."""
        return None

    # --- running --------------------------------------------------------------------------------------------
    def track_output(self, path: str) -> str:
        """Remember an output so that a failure or cancel in a later step removes it (no partial results)."""
        self._outputs_written.append(path)
        return path

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ..engine_jobs import EngineFailure

        self._outputs_written = []
        self._run = (parameters, context)
        try:
            result = self.run_engine(parameters, context, feedback, EngineBridge(feedback))
            if feedback.isCanceled():
                raise EngineFailure("cancelled", "cancelled")
            return result
        except EngineFailure as exc:
            self._remove_outputs()
            if exc.kind in ("died", "cancelled"):
                self._remove_leftovers(parameters, context)
            if exc.kind == "cancelled":
                raise QgsProcessingException(self.tr("Cancelled by the user; no output was written.")) from None
            raise QgsProcessingException(str(exc)) from None
        except Exception:
            self._remove_outputs()
            raise

    def output_name(self, operation: str, input_parameter: str = "INPUT") -> str:
        """Layer name of a result: the input layer's name and the operation ("detroit_emb similarity"), so runs on
        different inputs or with different settings are told apart in the layer tree."""
        from .outputs import output_layer_name

        layer = None
        if self._run is not None and self.parameterDefinition(input_parameter) is not None:
            parameters, context = self._run
            layer = self.parameterAsLayer(parameters, input_parameter, context)
        return output_layer_name(layer.name() if layer is not None else "GAIR", operation)

    def finish_layer_result(self, result: dict, context: QgsProcessingContext,
                            feedback: QgsProcessingFeedback) -> dict:
        """Report a per-feature embedding job's result (path, total, embedded, problems, summary) and hand its
        GeoPackage to Processing."""
        from .outputs import finish_output

        path = self.track_output(str(result["path"]))
        summary = result.get("summary") or f"{result['embedded']} of {result['total']} features embedded -> {path}"
        (feedback.pushWarning if result.get("problems") else feedback.pushInfo)(summary)
        finish_output(context, path, self.output_name("embeddings"), "OUTPUT")
        return {"OUTPUT": path, "EMBEDDED": result["embedded"]}

    def layer_job(self, parameters, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                  **params) -> dict:
        """Run a per-feature embedding operation on INPUT -> OUTPUT with the model, the toolbox's scalar values and
        `params`; its GeoPackage handed to Processing."""
        params = {"layer": self.vector_path(parameters, "INPUT", context, feedback),
                  "output": self.parameterAsOutputLayer(parameters, "OUTPUT", context),
                  **self.engine_values(parameters, context), **params,
                  **self.model_params(parameters, context, feedback)}
        return self.finish_layer_result(self.run_job(params, feedback), context, feedback)

    def _remove_leftovers(self, parameters, context: QgsProcessingContext) -> None:
        """A worker that died (or was stopped) mid-job leaves the temp files and the lock file of the outputs it was
        writing beside them: remove those (an output another run is writing now keeps its files)."""
        import os

        from ..engine_link import engine_attrs

        output_lock, remove_stale_temp_files = engine_attrs("io.files", "OutputLock", "remove_stale_temp_files")
        for definition in self.destinationParameterDefinitions():
            path = self.parameterAsFileOutput(parameters, definition.name(), context)
            if not path or not os.path.isabs(path) or not os.path.isdir(os.path.dirname(path)):
                continue
            try:
                with output_lock(path):  # free: its holder died
                    remove_stale_temp_files(path)
            except Exception:  # noqa: BLE001 - busy (another run) or unreadable: not ours to clean
                continue

    def _remove_outputs(self) -> None:
        from .outputs import remove_file_set

        for path in self._outputs_written:
            remove_file_set(path)
        self._outputs_written = []


def raster_layer_path(layer: QgsRasterLayer) -> str:
    """File path of a GDAL raster layer; other providers (WMS, XYZ…) cannot feed the engine."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"'{layer.name()}' is a {layer.providerType()} layer; GAIR needs a raster file. "
            "Save it first with Raster > Conversion > Translate (Convert Format)."
        )
    return layer.source().split("|")[0]


def sentinel2_band_problem(path: str, bands: str | None) -> str | None:
    """None when the raster's band descriptions (or band count, or `bands`) map onto the model's Sentinel-2 bands,
    else the engine's one-line message saying how to fix it (read with GDAL; the engine checks again at run time)."""
    from osgeo import gdal

    from ..engine_link import engine, engine_attrs

    dataset = gdal.Open(path)
    if dataset is None:
        return f"GDAL cannot open {path}; choose a raster file."
    descriptions = [dataset.GetRasterBand(i).GetDescription() or None for i in range(1, dataset.RasterCount + 1)]
    dataset = None
    try:
        engine_attrs("io.bands", "resolve_bands")(descriptions, tuple(engine.GAIRConfig().rs_bands), bands or None)
    except engine.GAIRError as exc:
        return str(exc)
    return None


def require_embedding_raster(layer: QgsRasterLayer | None) -> str | None:
    """None when `layer` is a GAIR embedding raster (GAIR_KIND=embedding), else what it is and what to pick."""
    from ..layers import embedding_raster_problem

    return embedding_raster_problem(layer)
