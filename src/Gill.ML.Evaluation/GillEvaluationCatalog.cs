using Microsoft.ML;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>Adds <c>mlContext.Gill().Evaluation</c>.</summary>
public static class GillEvaluationExtensions
{
    extension(GillCatalog catalog)
    {
        /// <summary>GILL's evaluation metrics: CLIP similarity, LPIPS, FID/KID, Recall@k, decision F1 and BLEU-4.</summary>
        public GillEvaluationCatalog Evaluation => new(catalog.Context);
    }
}

/// <summary>
/// The metrics of the GILL paper as evaluators over plain arrays, tensors, files and <see cref="IDataView"/> columns.
/// Each returns an immutable metrics object with the value, N, per-example scores where they exist, a seeded bootstrap
/// 95% interval, and <c>ToDataFrame()</c>/<c>ToSummaryDataFrame()</c>.
/// </summary>
public sealed class GillEvaluationCatalog
{
    internal GillEvaluationCatalog(MLContext context) => Context = context ?? throw new ArgumentNullException(nameof(context));

    /// <summary>The ML.NET context.</summary>
    public MLContext Context { get; }

    // ---------------------------------------------------------------- CLIP similarity

    /// <summary>
    /// CLIP similarity of precomputed embeddings: cosine of <paramref name="generated"/>[i] and <paramref name="reference"/>[i].
    /// For GILL's numbers use projected CLIP ViT-L/14 image embeddings (<c>get_image_features</c>), not pooled features.
    /// </summary>
    public ClipSimilarityMetrics ClipSimilarity(IReadOnlyList<float[]> generated, IReadOnlyList<float[]> reference, IReadOnlyList<string>? keys = null, ClipSimilarityOptions? options = null) =>
        ClipSimilarityEvaluator.Evaluate(generated, reference, keys, options ?? new ClipSimilarityOptions());

    /// <summary>CLIP similarity over two embedding columns (vectors of Single) of one data view, row by row.</summary>
    public ClipSimilarityMetrics ClipSimilarity(IDataView data, string generatedEmbeddingColumnName, string referenceEmbeddingColumnName, string? keyColumnName = null, ClipSimilarityOptions? options = null)
    {
        var a = DataViewColumns.ReadVectors(data, generatedEmbeddingColumnName, "generated embedding");
        var b = DataViewColumns.ReadVectors(data, referenceEmbeddingColumnName, "reference embedding");
        var keys = keyColumnName is null ? null : DataViewColumns.ReadStrings(data, keyColumnName, "key");
        return ClipSimilarity(a, b, keys, options);
    }

    /// <summary>CLIP similarity of image pairs embedded by <paramref name="embedder"/> (images <c>[3, H, W]</c> in [0, 1]).</summary>
    public ClipSimilarityMetrics ClipSimilarity(IImageEmbedder embedder, IReadOnlyList<Tensor> generatedImages, IReadOnlyList<Tensor> referenceImages, IReadOnlyList<string>? keys = null, ClipSimilarityOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(embedder);
        ArgumentNullException.ThrowIfNull(generatedImages);
        ArgumentNullException.ThrowIfNull(referenceImages);
        options ??= new ClipSimilarityOptions();
        options.Validate();
        if (generatedImages.Count != referenceImages.Count)
            throw new ArgumentException($"CLIP similarity compares pairs: there are {generatedImages.Count} generated images but {referenceImages.Count} reference images.", nameof(referenceImages));
        var a = EmbedAll(embedder, generatedImages.Count, i => (generatedImages[i], false), options.BatchSize, "generated");
        var b = EmbedAll(embedder, referenceImages.Count, i => (referenceImages[i], false), options.BatchSize, "reference");
        return ClipSimilarity(a, b, keys, options);
    }

    /// <summary>CLIP similarity of image files paired in order.</summary>
    public ClipSimilarityMetrics ClipSimilarityFromFiles(IImageEmbedder embedder, IReadOnlyList<string> generatedPaths, IReadOnlyList<string> referencePaths, ClipSimilarityOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(embedder);
        ArgumentNullException.ThrowIfNull(generatedPaths);
        ArgumentNullException.ThrowIfNull(referencePaths);
        options ??= new ClipSimilarityOptions();
        options.Validate();
        if (generatedPaths.Count != referencePaths.Count)
            throw new ArgumentException($"CLIP similarity compares pairs: there are {generatedPaths.Count} generated images but {referencePaths.Count} reference images.", nameof(referencePaths));
        var a = EmbedAll(embedder, generatedPaths.Count, i => (ImageFiles.LoadRgb(generatedPaths[i]), true), options.BatchSize, "generated");
        var b = EmbedAll(embedder, referencePaths.Count, i => (ImageFiles.LoadRgb(referencePaths[i]), true), options.BatchSize, "reference");
        return ClipSimilarity(a, b, generatedPaths.Select(Path.GetFileName).Select(n => n ?? "").ToArray(), options);
    }

    /// <summary>CLIP similarity of the images of two folders paired by file name.</summary>
    public ClipSimilarityMetrics ClipSimilarityFromFolders(IImageEmbedder embedder, string generatedFolder, string referenceFolder, ClipSimilarityOptions? options = null)
    {
        var pairs = ImageFiles.PairByName(generatedFolder, referenceFolder);
        var m = ClipSimilarityFromFiles(embedder, pairs.Select(p => p.A).ToArray(), pairs.Select(p => p.B).ToArray(), options);
        return m;
    }

    private static float[][] EmbedAll(IImageEmbedder embedder, int count, Func<int, (Tensor Image, bool Owned)> get, int batchSize, string role)
    {
        var result = new List<float[]>(count);
        for (int start = 0; start < count; start += batchSize)
        {
            int n = Math.Min(batchSize, count - start);
            using var scope = torch.NewDisposeScope();
            var batch = new Tensor[n];
            for (int i = 0; i < n; i++)
            {
                var (img, _) = get(start + i);
                try
                {
                    ImageChecks.CheckRgb01(img, start + i, "CLIP similarity");
                }
                catch (ArgumentException e)
                {
                    throw new ArgumentException($"{role} {e.Message}", e);
                }
                batch[i] = img;
            }
            using var noGrad = torch.no_grad();
            var emb = embedder.Embed(batch);
            if (emb.dim() != 2 || emb.shape[0] != n)
                throw new InvalidOperationException($"The image embedder returned {Gill.ML.Serialization.SafeTensors.FormatShape(emb.shape)} for {n} {role} images; expected [{n}, D].");
            var f = emb.detach().to(ScalarType.Float32).cpu().contiguous();
            long d = f.shape[1];
            var data = f.data<float>().ToArray();
            for (int i = 0; i < n; i++) result.Add(data.AsSpan((int)(i * d), (int)d).ToArray());
        }
        return result.ToArray();
    }

    // ---------------------------------------------------------------- LPIPS

    /// <summary>Loads an LPIPS model (v0.1 heads embedded; trunk weights from <paramref name="trunkWeightsPath"/>).</summary>
    public LpipsModel LoadLpips(LpipsNet net, string trunkWeightsPath, string? headsPath = null, LpipsOptions? options = null) =>
        LpipsModel.Load(net, trunkWeightsPath, headsPath, options);

    /// <summary>LPIPS of image pairs (<c>[3, H, W]</c> in [0, 1]); resizing follows the model's options.</summary>
    public LpipsMetrics Lpips(LpipsModel model, IReadOnlyList<Tensor> generatedImages, IReadOnlyList<Tensor> referenceImages, IReadOnlyList<string>? keys = null, BootstrapOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new BootstrapOptions();
        options.Validate();
        var scores = model.Score(generatedImages, referenceImages);
        return new LpipsMetrics(model.Net, scores, keys, Bootstrap.MeanInterval(scores, options));
    }

    /// <summary>LPIPS of image files paired in order.</summary>
    public LpipsMetrics LpipsFromFiles(LpipsModel model, IReadOnlyList<string> generatedPaths, IReadOnlyList<string> referencePaths, BootstrapOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new BootstrapOptions();
        options.Validate();
        var scores = model.ScoreFiles(generatedPaths, referencePaths);
        return new LpipsMetrics(model.Net, scores, generatedPaths.Select(p => Path.GetFileName(p) ?? "").ToArray(), Bootstrap.MeanInterval(scores, options));
    }

    /// <summary>LPIPS of the images of two folders paired by file name (as GILL's <c>lpips_2dirs.py</c>).</summary>
    public LpipsMetrics LpipsFromFolders(LpipsModel model, string generatedFolder, string referenceFolder, BootstrapOptions? options = null)
    {
        var pairs = ImageFiles.PairByName(generatedFolder, referenceFolder);
        return LpipsFromFiles(model, pairs.Select(p => p.A).ToArray(), pairs.Select(p => p.B).ToArray(), options);
    }

    /// <summary>LPIPS over two image-path (text) columns of a data view.</summary>
    public LpipsMetrics Lpips(LpipsModel model, IDataView data, string generatedImagePathColumnName, string referenceImagePathColumnName, BootstrapOptions? options = null)
    {
        var a = DataViewColumns.ReadStrings(data, generatedImagePathColumnName, "generated image path");
        var b = DataViewColumns.ReadStrings(data, referenceImagePathColumnName, "reference image path");
        return LpipsFromFiles(model, a, b, options);
    }

    // ---------------------------------------------------------------- FID / KID

    /// <summary>Loads the FID InceptionV3 from safetensors (torchvision / pytorch-fid key names).</summary>
    public FidFeatureExtractor LoadFidInception(string weightsPath, FidFeatureExtractorOptions? options = null) => FidFeatureExtractor.Load(weightsPath, options);

    /// <summary>FID from saved or computed feature statistics.</summary>
    public FidMetrics Fid(FeatureStatistics generated, FeatureStatistics reference, FidOptions? options = null) =>
        FidEvaluator.FromStatistics(generated, reference, options ?? new FidOptions());

    /// <summary>FID from feature matrices <c>[N, D]</c> (rows are samples).</summary>
    public FidMetrics Fid(Tensor generatedFeatures, Tensor referenceFeatures, FidOptions? options = null) =>
        FidEvaluator.FromFeatures(generatedFeatures, referenceFeatures, options ?? new FidOptions());

    /// <summary>FID from feature rows.</summary>
    public FidMetrics Fid(IReadOnlyList<float[]> generatedFeatures, IReadOnlyList<float[]> referenceFeatures, FidOptions? options = null)
    {
        using var a = FidEvaluator.ToMatrix(generatedFeatures, "generated features");
        using var b = FidEvaluator.ToMatrix(referenceFeatures, "reference features");
        return Fid(a, b, options);
    }

    /// <summary>FID over feature columns (vectors of Single) of two data views.</summary>
    public FidMetrics Fid(IDataView generated, IDataView reference, string featureColumnName, string? referenceFeatureColumnName = null, FidOptions? options = null) =>
        Fid(DataViewColumns.ReadVectors(generated, featureColumnName, "generated feature"),
            DataViewColumns.ReadVectors(reference, referenceFeatureColumnName ?? featureColumnName, "reference feature"), options);

    /// <summary>FID of two image folders (or saved statistics files), through the FID Inception.</summary>
    public FidMetrics FidFromFolders(FidFeatureExtractor extractor, string generated, string reference, FidOptions? options = null, CancellationToken cancellationToken = default) =>
        Fid(StatisticsOf(extractor, generated, cancellationToken), StatisticsOf(extractor, reference, cancellationToken), options);

    /// <summary>
    /// Feature statistics of a folder of images, or the statistics stored in a file written by
    /// <see cref="FeatureStatistics.Save"/> when <paramref name="folderOrStatisticsFile"/> is a file.
    /// </summary>
    public FeatureStatistics StatisticsOf(FidFeatureExtractor extractor, string folderOrStatisticsFile, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(extractor);
        if (File.Exists(folderOrStatisticsFile)) return FeatureStatistics.Load(folderOrStatisticsFile);
        var files = ImageFiles.List(folderOrStatisticsFile);
        if (files.Count < 2) throw new ArgumentException($"FID needs at least 2 images; '{folderOrStatisticsFile}' has {files.Count}.", nameof(folderOrStatisticsFile));
        return extractor.ExtractFromFiles(files, false, cancellationToken).Statistics;
    }

    /// <summary>KID from feature matrices <c>[N, D]</c>.</summary>
    public KidMetrics Kid(Tensor generatedFeatures, Tensor referenceFeatures, KidOptions? options = null) =>
        FidEvaluator.Kid(generatedFeatures, referenceFeatures, options ?? new KidOptions());

    /// <summary>KID from feature rows.</summary>
    public KidMetrics Kid(IReadOnlyList<float[]> generatedFeatures, IReadOnlyList<float[]> referenceFeatures, KidOptions? options = null)
    {
        using var a = FidEvaluator.ToMatrix(generatedFeatures, "generated features");
        using var b = FidEvaluator.ToMatrix(referenceFeatures, "reference features");
        return Kid(a, b, options);
    }

    /// <summary>KID over feature columns of two data views.</summary>
    public KidMetrics Kid(IDataView generated, IDataView reference, string featureColumnName, string? referenceFeatureColumnName = null, KidOptions? options = null) =>
        Kid(DataViewColumns.ReadVectors(generated, featureColumnName, "generated feature"),
            DataViewColumns.ReadVectors(reference, referenceFeatureColumnName ?? featureColumnName, "reference feature"), options);

    // ---------------------------------------------------------------- Recall@k

    /// <summary>Recall@k with one positive image per text (<paramref name="groundTruth"/>[t] = image index of text t).</summary>
    public RecallAtKMetrics RecallAtK(IReadOnlyList<float[]> textEmbeddings, IReadOnlyList<float[]> imageEmbeddings, IReadOnlyList<int> groundTruth,
        RetrievalDirection direction = RetrievalDirection.TextToImage, RecallAtKOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(groundTruth);
        return RecallAtK(textEmbeddings, imageEmbeddings, groundTruth.Select(g => new[] { g }).ToArray(), null, direction, options);
    }

    /// <summary>
    /// Recall@k with several positives per text and items excluded per text (VIST: a story's own input images are not
    /// candidates). Lists are indexed by text; in <see cref="RetrievalDirection.ImageToText"/> they are inverted.
    /// </summary>
    public RecallAtKMetrics RecallAtK(IReadOnlyList<float[]> textEmbeddings, IReadOnlyList<float[]> imageEmbeddings, IReadOnlyList<int[]> positives,
        IReadOnlyList<int[]>? excluded, RetrievalDirection direction = RetrievalDirection.TextToImage, RecallAtKOptions? options = null) =>
        RecallAtKEvaluator.Evaluate(textEmbeddings, imageEmbeddings, positives, excluded, direction, options ?? new RecallAtKOptions());

    /// <summary>
    /// Recall@k over data views: texts (embedding column, positives column of image row indices: Int32/Int64 or a vector
    /// of them, optional excluded column) and images (embedding column).
    /// </summary>
    public RecallAtKMetrics RecallAtK(IDataView texts, string textEmbeddingColumnName, string positivesColumnName, IDataView images, string imageEmbeddingColumnName,
        string? excludedColumnName = null, RetrievalDirection direction = RetrievalDirection.TextToImage, RecallAtKOptions? options = null)
    {
        var t = DataViewColumns.ReadVectors(texts, textEmbeddingColumnName, "text embedding");
        var p = DataViewColumns.ReadIntLists(texts, positivesColumnName, "positives");
        var e = excludedColumnName is null ? null : DataViewColumns.ReadIntLists(texts, excludedColumnName, "excluded");
        var i = DataViewColumns.ReadVectors(images, imageEmbeddingColumnName, "image embedding");
        return RecallAtK(t, i, p, e, direction, options);
    }

    // ---------------------------------------------------------------- Decision classifier

    /// <summary>Macro and per-class precision/recall/F1 of class indices (e.g. GILL's 0 = gen, 1 = ret).</summary>
    public ClassificationMetrics Classification(IReadOnlyList<int> labels, IReadOnlyList<int> predictions, IReadOnlyList<string>? classNames = null, BootstrapOptions? options = null) =>
        ClassificationEvaluator.Evaluate(labels, predictions, classNames, options ?? new BootstrapOptions());

    /// <summary>Classification metrics over label and predicted-label columns (Boolean, integer or key).</summary>
    public ClassificationMetrics Classification(IDataView data, string labelColumnName = "Label", string predictedLabelColumnName = "PredictedLabel",
        IReadOnlyList<string>? classNames = null, BootstrapOptions? options = null)
    {
        var l = DataViewColumns.ReadIntLists(data, labelColumnName, "label");
        var p = DataViewColumns.ReadIntLists(data, predictedLabelColumnName, "predicted label");
        if (l.Any(x => x.Length != 1)) throw new ArgumentException($"The label column '{labelColumnName}' must hold one value per row.");
        if (p.Any(x => x.Length != 1)) throw new ArgumentException($"The predicted label column '{predictedLabelColumnName}' must hold one value per row.");
        return Classification(l.Select(x => x[0]).ToArray(), p.Select(x => x[0]).ToArray(), classNames, options);
    }

    // ---------------------------------------------------------------- BLEU

    /// <summary>Corpus BLEU-4 (sacrebleu defaults) with one reference per hypothesis.</summary>
    public BleuMetrics Bleu(IReadOnlyList<string> hypotheses, IReadOnlyList<string> references, BleuOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(references);
        return Bleu(hypotheses, references.Select(r => (IReadOnlyList<string>)new[] { r }).ToArray(), options);
    }

    /// <summary>Corpus BLEU-4 with several references per hypothesis (e.g. the 5 COCO captions).</summary>
    public BleuMetrics Bleu(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string>> references, BleuOptions? options = null) =>
        BleuEvaluator.Evaluate(hypotheses, references, options ?? new BleuOptions());

    /// <summary>Corpus BLEU-4 over a hypothesis text column and a reference column (text, or a vector of text for several references).</summary>
    public BleuMetrics Bleu(IDataView data, string hypothesisColumnName, string referenceColumnName, BleuOptions? options = null) =>
        Bleu(DataViewColumns.ReadStrings(data, hypothesisColumnName, "hypothesis"),
            DataViewColumns.ReadStringLists(data, referenceColumnName, "reference").Select(r => (IReadOnlyList<string>)r).ToArray(), options);
}
