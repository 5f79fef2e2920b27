using Gill.ML.Chat;
using Gill.ML.Inference;
using Gill.ML.Modules;
using Gill.ML.Retrieval;
using Microsoft.Extensions.AI;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Inference;

[TestClass]
public sealed class RetrievalIndexAndChatTests
{
    [ClassInitialize]
    public static void Init(TestContext _) => GillTestThreads.Enter();

    [ClassCleanup]
    public static void Cleanup() => GillTestThreads.Leave();

    [TestMethod]
    public void IndexRoundTripMatchesTheModelAndSearchesExactly()
    {
        string dir = InferenceTestKit.NewTempDir("index");
        for (int i = 0; i < 7; i++) InferenceTestKit.WriteImage(dir, $"i{i}.png", 300 + i);
        using var core = GillTestData.LoadStepModel();
        var encoder = new GridVisualEncoder();
        var hash = GillRetrievalIndex.ComputeModelHash(core, encoder);
        foreach (var dtype in new[] { GillIndexDType.Float32, GillIndexDType.Float16 })
        {
            string path = Path.Combine(dir, $"g-{dtype}.gidx");
            Assert.AreEqual(7, GillRetrievalIndexBuilder.BuildFromFolder(core, encoder, dir, path, dtype, batchSize: 3));
            using var index = GillRetrievalIndex.Open(path, hash);
            Assert.AreEqual(7, index.Count);
            Assert.AreEqual(core.Config.RetEmbDim, index.Dimension);
            Assert.AreEqual("i3.png", index.GetId(3));
            using var scope = torch.NewDisposeScope();
            using var bmp = SkiaSharp.SKBitmap.Decode(Path.Combine(dir, "i3.png"));
            var enc = encoder.Encode(new[] { bmp }, false);
            var expected = core.ImageRetrievalEmbedding(torch.tensor(enc.Features, new long[] { 1, 20 }))[0];
            double tol = dtype == GillIndexDType.Float16 ? 2e-3 : 1e-6;
            Assert.IsTrue((index.GetVector(3) - expected).abs().max().item<float>() < tol);
            var hits = index.Search(expected, 3)[0];
            Assert.AreEqual(3, hits[0].Index);
            Assert.AreEqual(1.0, hits[0].Score, 5e-3);
            // chunked scan == one chunk; exclusion removes rows
            var (s1, i1) = index.SearchRaw(torch.randn(4, index.Dimension, generator: new Generator(5)), 5);
            index.ChunkRows = 2;
            var (s2, i2) = index.SearchRaw(torch.randn(4, index.Dimension, generator: new Generator(5)), 5);
            CollectionAssert.AreEqual(i1, i2);
            var excl = index.Search(expected, 7, new long[] { 3, 0 })[0];
            Assert.AreEqual(5, excl.Count);
            Assert.IsFalse(excl.Any(h => h.Index is 3 or 0));
        }
        // The same gallery from an IDataView column of paths.
        var ml = new Microsoft.ML.MLContext(seed: 1);
        var rows = Enumerable.Range(0, 7).Select(i => new PathRow { Path = Path.Combine(dir, $"i{i}.png") }).ToList();
        string viewIndex = Path.Combine(dir, "view.gidx");
        Assert.AreEqual(7, GillRetrievalIndexBuilder.BuildFromDataView(core, encoder, ml.Data.LoadFromEnumerable(rows), nameof(PathRow.Path), viewIndex));
        using (var fromView = GillRetrievalIndex.Open(viewIndex, hash))
        using (var fromFolder = GillRetrievalIndex.Open(Path.Combine(dir, "g-Float32.gidx"), hash))
        {
            Assert.AreEqual(rows[2].Path, fromView.GetId(2));
            using var a = fromView.GetVector(2);
            using var b = fromFolder.GetVector(2);
            Assert.IsTrue((a - b).abs().max().item<float>() < 1e-6, "same vectors whatever the batch size");
        }
        Assert.ThrowsExactly<ArgumentException>(() => GillRetrievalIndexBuilder.BuildFromDataView(core, encoder, ml.Data.LoadFromEnumerable(rows), "Nope", viewIndex));
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void IndexErrorsNameTheProblem()
    {
        string dir = InferenceTestKit.NewTempDir("index-errors");
        for (int i = 0; i < 3; i++) InferenceTestKit.WriteImage(dir, $"i{i}.png", 400 + i);
        using var core = GillTestData.LoadStepModel();
        var encoder = new GridVisualEncoder();
        string path = Path.Combine(dir, "g.gidx");
        GillRetrievalIndexBuilder.BuildFromFolder(core, encoder, dir, path);

        using (var other = new GillCoreModel(core.LanguageModel, core.Config, seed: 99))
        {
            var e = Assert.ThrowsExactly<GillIndexModelMismatchException>(() => GillRetrievalIndex.Open(path, GillRetrievalIndex.ComputeModelHash(other, encoder)));
            StringAssert.Contains(e.Message, "another model");
        }
        string corrupt = Path.Combine(dir, "corrupt.gidx");
        var bytes = File.ReadAllBytes(path);
        bytes[GillRetrievalIndex.HeaderSize + 5] ^= 0x40;
        File.WriteAllBytes(corrupt, bytes);
        var c = Assert.ThrowsExactly<InvalidDataException>(() => GillRetrievalIndex.Open(corrupt));
        StringAssert.Contains(c.Message, "corrupted");
        File.WriteAllBytes(corrupt, File.ReadAllBytes(path).AsSpan(0, 200).ToArray());
        Assert.ThrowsExactly<InvalidDataException>(() => GillRetrievalIndex.Open(corrupt, verifyChecksum: false));
        File.WriteAllText(corrupt, "hello");
        Assert.ThrowsExactly<InvalidDataException>(() => GillRetrievalIndex.Open(corrupt));

        string empty = InferenceTestKit.NewTempDir("empty");
        Assert.ThrowsExactly<InvalidOperationException>(() => GillRetrievalIndexBuilder.BuildFromFolder(core, encoder, empty, Path.Combine(dir, "e.gidx")));
        using (var w = new GillRetrievalIndexWriter(Path.Combine(dir, "e.gidx"), 8, new byte[32]))
            Assert.ThrowsExactly<InvalidOperationException>(() => w.Complete());
        Assert.IsFalse(File.Exists(Path.Combine(dir, "e.gidx")), "nothing is left behind");
        Directory.Delete(dir, true);
        Directory.Delete(empty, true);
    }

    [TestMethod]
    public async Task ChatClientRoundTripsTextAndImages()
    {
        string dir = InferenceTestKit.NewTempDir("chat");
        string img = InferenceTestKit.WriteImage(dir, "x.png", 7);
        using var model = InferenceTestKit.Model(generator: new CountingImageGenerator());
        var defaults = new GillGenerationOptions { MaxNewTokens = 3, MinTokensBeforeImage = 1, ImageTokenScaleFactor = 1e5, StopAtEos = false, ContextOverflow = GillContextOverflow.TruncateLeft };
        IChatClient client = new GillChatClient(model, defaults);
        var messages = new List<ChatMessage>
        {
            new(ChatRole.User, new AIContent[] { new DataContent(File.ReadAllBytes(img), "image/png"), new TextContent("what is this?") }),
        };
        var response = await client.GetResponseAsync(messages);
        var contents = response.Messages.Single().Contents;
        Assert.IsTrue(contents.OfType<TextContent>().Any(t => t.Text.Length > 0));
        var image = contents.OfType<DataContent>().Single();
        Assert.AreEqual("image/png", image.MediaType);
        using (var t = Gill.ML.Generation.ImageTensorIO.FromEncodedBytes(image.Data.ToArray()))
            CollectionAssert.AreEqual(new long[] { 3, 8, 8 }, t.shape);

        // Same answer through the model directly (prompt in GILL's dialogue format).
        using (var direct = model.Generate(GillPrompt.Of(GillImageInput.FromFile(img), "Q: what is this?\nA:"), defaults))
            Assert.AreEqual(direct.Parts.OfType<GillTextOutput>().First().Text.Trim(), contents.OfType<TextContent>().First().Text);

        var streamed = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(messages)) streamed.Add(u);
        Assert.AreEqual(response.Text, string.Concat(streamed.Select(u => u.Text)).Trim());
        Assert.IsTrue(streamed.SelectMany(u => u.Contents).OfType<DataContent>().Any(), "the image arrives in the stream");

        messages.Add(response.Messages.Single());
        messages.Add(new ChatMessage(ChatRole.User, "and now?"));
        var second = await client.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 2 });
        Assert.IsNotNull(second.Messages.Single());
        Assert.ThrowsExactly<ArgumentException>(() => GillChatClient.ToPrompt(Array.Empty<ChatMessage>()));
        var shown = new ChatMessage(ChatRole.Assistant, new AIContent[]
        {
            new TextContent("[image g/1.png]") { AdditionalProperties = new AdditionalPropertiesDictionary { [GillChatClient.GalleryIdKey] = "g/1.png" } },
            new DataContent(File.ReadAllBytes(img), "image/png") { AdditionalProperties = new AdditionalPropertiesDictionary { [GillChatClient.GalleryIdKey] = "g/2.png" } },
        });
        CollectionAssert.AreEquivalent(new[] { "g/1.png", "g/2.png" }, GillChatClient.ShownGalleryIds(new[] { shown }).ToArray());
        Assert.AreEqual("g/2.png", GillChatClient.ToPrompt(new[] { shown }).Parts.OfType<GillImageInput>().Single().GalleryId);
        var undecodable = new List<ChatMessage> { new(ChatRole.User, new AIContent[] { new DataContent(new byte[] { 1, 2, 3 }, "image/png"), new TextContent("hi") }) };
        await Assert.ThrowsExactlyAsync<InvalidDataException>(() => client.GetResponseAsync(undecodable));
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void ModelFolderLoadsFromItsManifest()
    {
        string dir = InferenceTestKit.NewTempDir("folder");
        using (var core = GillTestData.LoadStepModel())
        {
            core.Save(Path.Combine(dir, "gill"));
            InferenceTestKit.WriteTokenizerFolder(Directory.CreateDirectory(Path.Combine(dir, "tok")).FullName);
            var images = Directory.CreateDirectory(Path.Combine(dir, "images")).FullName;
            for (int i = 0; i < 3; i++) InferenceTestKit.WriteImage(images, $"p{i}.png", 500 + i);
            GillRetrievalIndexBuilder.BuildFromFolder(core, new GridVisualEncoder(), images, Path.Combine(dir, "gallery.gidx"));
        }
        GillModelFolder.WriteManifest(dir, new GillModelManifest
        {
            LanguageModel = Fixtures.Dir("opt-tiny"),
            Tokenizer = "tok",
            Index = "gallery.gidx",
        });
        using var model = GillModel.Load(dir, new GillModelLoadOptions { VisualEncoder = new GridVisualEncoder() });
        Assert.IsNotNull(model.Gallery);
        using var r = model.Generate(GillPrompt.Of("a cat"), new GillGenerationOptions
        {
            MaxNewTokens = 2, MinTokensBeforeImage = 1, ImageTokenScaleFactor = 1e5, StopAtEos = false,
            DecisionMode = GillDecisionMode.AlwaysRetrieve,
        });
        Assert.IsTrue(r.Parts.OfType<GillRetrievedImageOutput>().Any());
        // A gallery built by another encoder is refused.
        var m = GillModelFolder.ReadManifest(dir);
        Assert.ThrowsExactly<GillIndexModelMismatchException>(() => GillModel.Load(dir, new GillModelLoadOptions { VisualEncoder = new OtherEncoder() }));
        Assert.ThrowsExactly<FileNotFoundException>(() => GillModel.Load(Path.Combine(dir, "gill")));
        Assert.AreEqual("gallery.gidx", m.Index);
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void WorldDecoderServesAsTheImageGenerator()
    {
        string dir = InferenceTestKit.NewTempDir("world-decoder");
        using (var decoder = new Gill.ML.WorldModels.TextToImageDecoder(new Gill.ML.WorldModels.TextToImageDecoderConfig
               { CondTokens = 6, CondDim = 12, ImageSize = 16, GridSize = 4, HiddenDim = 16, NumHeads = 2, NumLayers = 1, BaseChannels = 16 }))
            decoder.SaveFolder(dir);
        using var generator = Gill.ML.WorldModels.WorldImageGenerator.Load(dir);
        Assert.AreEqual(new Gill.ML.Generation.ConditioningShape(6, 12), generator.ConditioningShape);
        using var model = InferenceTestKit.Model(generator: generator);
        using var r = model.Generate(GillPrompt.Of("a cat"), new GillGenerationOptions { MaxNewTokens = 2, MinTokensBeforeImage = 1, ImageTokenScaleFactor = 1e5, StopAtEos = false });
        var img = r.Parts.OfType<GillGeneratedImageOutput>().Single();
        CollectionAssert.AreEqual(new long[] { 3, 16, 16 }, img.Image.shape);
        Assert.IsTrue(img.Image.min().item<float>() >= 0 && img.Image.max().item<float>() <= 1);
        using var bad = torch.zeros(1, 5, 12);
        Assert.ThrowsExactly<ArgumentException>(() => generator.Generate(bad));
        Directory.Delete(dir, true);
    }

    private sealed class PathRow
    {
        public string Path { get; set; } = "";
    }

    private sealed class OtherEncoder : Gill.ML.Stages.VisualFeatures.IVisualEncoder
    {
        private readonly GridVisualEncoder _inner = new();
        public string Name => "other";
        public int FeatureSize => 20;
        public int EmbeddingSize => 0;
        public Gill.ML.Stages.VisualFeatures.VisualEncoding Encode(IReadOnlyList<SkiaSharp.SKBitmap> images, bool includeEmbedding) => _inner.Encode(images, includeEmbedding);
    }
}
