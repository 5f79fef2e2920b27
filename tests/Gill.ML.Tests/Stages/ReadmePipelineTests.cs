using Gill.ML.Stages;
using Gill.ML.Stages.Joint;
using Gill.ML.Stages.VisualFeatures;
using Gill.ML.Tests.MLNet;
using Gill.ML.Training;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.Tests.Stages;

/// <summary>The README's complete pipeline, run on the tiny fixtures so that it is known to compile and work.</summary>
[TestClass]
public class ReadmePipelineTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    [TestMethod]
    public void CompletePipelineTrainsSavesLoadsAndTransforms()
    {
        using var images = new TestImages(8);
        string clipVisionFolder = Fixtures.Dir("clip-vision-tiny");   // openai/clip-vit-large-patch14 in real use
        string languageModelFolder = Fixtures.Dir("opt-tiny");        // facebook/opt-6.7b
        string tokenizerFolder = StageTestData.TokenizerFolder;       // the OPT tokenizer files
        string textEncoderFolder = StageTestData.ClipTextFolder;      // Stable Diffusion's text_encoder (+ tokenizer)
        string work = StageTestData.NewDir("readme");
        string[] imagePaths = images.Paths.ToArray();
        string[] captions = StageTestData.Captions;

        // --- README snippet begins ---
        var ml = new MLContext(seed: 1);

        // 1. Training data: a DataFrame of (image path, caption).
        var frame = new DataFrame(
            new StringDataFrameColumn("ImagePath", imagePaths),
            new StringDataFrameColumn("Caption", captions));
        IDataView data = frame; // a DataFrame is an IDataView

        // 2. The frozen backbones: CLIP vision tower, language model + tokenizer (with r [IMG] tokens added).
        using var clip = new ClipVisualEncoder(clipVisionFolder);
        using var backbone = GillLanguageBackbone.Load(languageModelFolder, tokenizerFolder, imgTokenCount: 4);

        // 3. Features (CLIP pooled output) and generation targets (text-to-image text encoder, cached on disk),
        // 4. then GILL's joint training.
        var pipeline = ml.Gill().ExtractVisualFeatures(GillColumnNames.ClipPooledFeatures, "ImagePath", clip)
            .Append(ml.Gill().ComputeGenerationTargets(textEncoderFolder, sequenceLength: 8, cacheFolder: Path.Combine(work, "targets")))
            .Append(ml.Gill().Trainers.Gill(new GillJointTrainer.Options
            {
                Backbone = backbone,
                Architecture = new GillConfig                // GillConfig.Default() is the released GILL (k=4, r=8, 77×768)
                {
                    NVisualTokens = 2, NumTokens = 4, VisualHiddenSize = clip.FeatureSize, RetEmbDim = 8,
                    MapperHiddenDim = 16, MapperNumHeads = 2, MapperNumEncoderLayers = 1, MapperNumDecoderLayers = 1,
                    NumClipTokens = 8, GenEmbDim = 24,
                },
                MaxSequenceLength = 14,
                BatchSize = 4,
                Epochs = 2,
                Training = new GillTrainingOptions { LearningRate = 1e-3, WarmupSteps = 0, CheckpointDirectory = Path.Combine(work, "checkpoints") },
            }));
        var model = pipeline.Fit(data);

        // 5. Save (ML.NET zip + Gill stages; backbones referenced by path and SHA-256) and load.
        string modelPath = Path.Combine(work, "gill-model.zip");
        ml.Gill().Model.Save(model, data.Schema, modelPath);
        ITransformer loaded = ml.Gill().Model.Load(modelPath, out DataViewSchema inputSchema);

        // 6. Transform: visual tokens, [IMG] hidden states, generation embeddings (L×m) and retrieval embeddings.
        IDataView scored = loaded.Transform(data);
        var generation = scored.GetColumn<VBuffer<float>>(GillColumnNames.GenerationEmbedding).ToList();
        var textRetrieval = scored.GetColumn<VBuffer<float>>(GillColumnNames.TextRetrievalEmbedding).ToList();
        // --- README snippet ends ---

        try
        {
            Assert.AreEqual(8, generation.Count);
            Assert.AreEqual(8 * 24, generation[0].Length);
            Assert.AreEqual(8, textRetrieval[0].Length);
            Assert.IsNotNull(inputSchema.GetColumnOrNull("ImagePath"));
            var original = model.Transform(data).GetColumn<VBuffer<float>>(GillColumnNames.GenerationEmbedding).ToList();
            for (int i = 0; i < 8; i++)
                CollectionAssert.AreEqual(original[i].DenseValues().ToArray(), generation[i].DenseValues().ToArray(), $"row {i}");
            Assert.IsNotNull(GillTrainer.LatestCheckpoint(Path.Combine(work, "checkpoints")));
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
            foreach (var t in model) (t as IDisposable)?.Dispose();
        }
    }
}
