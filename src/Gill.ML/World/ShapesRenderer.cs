using SkiaSharp;

namespace Gill.ML.World;

/// <summary>
/// Draws <see cref="ShapesScene"/>s with SkiaSharp: antialiased, deterministic, object centres and radii snapped to
/// whole pixels (no jitter), so the same scene always gives the same pixels.
/// </summary>
public static class ShapesRenderer
{
    /// <summary>The smallest image width the renderer accepts (a small object is then 2 px in radius).</summary>
    public const int MinImageSize = 16;

    /// <summary>The largest image width the renderer accepts.</summary>
    public const int MaxImageSize = 1024;

    /// <summary>Object radius in pixels for a size at an image width.</summary>
    public static int Radius(ShapeSize size, int imageSize) =>
        Math.Max(2, (int)Math.Round((size == ShapeSize.Small ? 0.13 : 0.22) * imageSize));

    /// <summary>Object centre in pixels (whole numbers) for a position at an image width.</summary>
    public static (int X, int Y) Centre(ShapePosition position, int imageSize)
    {
        int mid = imageSize / 2;
        int near = (int)Math.Round(0.25 * imageSize);
        int far = imageSize - near;
        return position switch
        {
            ShapePosition.Centre => (mid, mid),
            ShapePosition.Left => (near, mid),
            ShapePosition.Right => (far, mid),
            ShapePosition.Top => (mid, near),
            ShapePosition.Bottom => (mid, far),
            _ => throw new ArgumentOutOfRangeException(nameof(position), position, "Unknown position."),
        };
    }

    /// <summary>Renders a scene and encodes it as PNG bytes.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="imageSize"/> is outside [16, 1024].</exception>
    public static byte[] RenderPng(ShapesScene scene, int imageSize)
    {
        using var bitmap = RenderBitmap(scene, imageSize);
        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>
    /// Renders a scene into planar RGB floats in [0, 1], laid out [3, size, size] (channel, row, column) — the
    /// layout TorchSharp image models take.
    /// </summary>
    public static float[] RenderPixels(ShapesScene scene, int imageSize)
    {
        using var bitmap = RenderBitmap(scene, imageSize);
        return ToPlanarRgb(bitmap);
    }

    /// <summary>Reads a PNG (or any format SkiaSharp decodes) into planar RGB floats in [0, 1], [3, H, W].</summary>
    /// <exception cref="InvalidDataException">The file cannot be decoded.</exception>
    public static float[] LoadPixels(string path, out int width, out int height)
    {
        using var bitmap = SKBitmap.Decode(path) ?? throw new InvalidDataException($"Cannot decode image '{path}'.");
        width = bitmap.Width;
        height = bitmap.Height;
        return ToPlanarRgb(bitmap);
    }

    /// <summary>Renders a scene into a new RGBA bitmap (the caller disposes it).</summary>
    public static SKBitmap RenderBitmap(ShapesScene scene, int imageSize)
    {
        ArgumentNullException.ThrowIfNull(scene);
        if (imageSize < MinImageSize || imageSize > MaxImageSize)
            throw new ArgumentOutOfRangeException(nameof(imageSize), imageSize, $"Image size must be in [{MinImageSize}, {MaxImageSize}] pixels.");
        var bitmap = new SKBitmap(new SKImageInfo(imageSize, imageSize, SKColorType.Rgba8888, SKAlphaType.Premul));
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(ShapesWords.Rgb(scene.Background));
        using var paint = new SKPaint { IsAntialias = true, Style = SKPaintStyle.Fill };
        foreach (var o in scene.Objects)
        {
            paint.Color = ShapesWords.Rgb(o.Color);
            var (cx, cy) = Centre(o.Position, imageSize);
            DrawShape(canvas, paint, o.Shape, cx, cy, Radius(o.Size, imageSize));
        }
        canvas.Flush();
        return bitmap;
    }

    private static void DrawShape(SKCanvas canvas, SKPaint paint, ShapeKind shape, float cx, float cy, float r)
    {
        switch (shape)
        {
            case ShapeKind.Circle:
                canvas.DrawCircle(cx, cy, r, paint);
                return;
            case ShapeKind.Square:
            {
                float h = 0.85f * r;
                canvas.DrawRect(new SKRect(cx - h, cy - h, cx + h, cy + h), paint);
                return;
            }
            case ShapeKind.Triangle:
            {
                // Equilateral, point up; shifted down by r/4 so its bounding box is centred on (cx, cy).
                float s = MathF.Sqrt(3f) / 2f * r;
                float y0 = cy + r / 4f;
                DrawPolygon(canvas, paint, [new(cx, y0 - r), new(cx + s, y0 + r / 2f), new(cx - s, y0 + r / 2f)]);
                return;
            }
            case ShapeKind.Star:
            {
                var pts = new SKPoint[10];
                for (int i = 0; i < 10; i++)
                {
                    float rad = i % 2 == 0 ? r : 0.45f * r;
                    double a = -Math.PI / 2 + i * Math.PI / 5;
                    pts[i] = new SKPoint(cx + rad * (float)Math.Cos(a), cy + 0.05f * r + rad * (float)Math.Sin(a));
                }
                DrawPolygon(canvas, paint, pts);
                return;
            }
            case ShapeKind.Diamond:
            {
                float w = 0.75f * r;
                DrawPolygon(canvas, paint, [new(cx, cy - r), new(cx + w, cy), new(cx, cy + r), new(cx - w, cy)]);
                return;
            }
            case ShapeKind.Cross:
            {
                float t = 0.32f * r;
                canvas.DrawRect(new SKRect(cx - r, cy - t, cx + r, cy + t), paint);
                canvas.DrawRect(new SKRect(cx - t, cy - r, cx + t, cy + r), paint);
                return;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(shape), shape, "Unknown shape.");
        }
    }

    private static void DrawPolygon(SKCanvas canvas, SKPaint paint, SKPoint[] points)
    {
        using var path = new SKPath();
        path.AddPoly(points, close: true);
        canvas.DrawPath(path, paint);
    }

    private static float[] ToPlanarRgb(SKBitmap source)
    {
        using var rgba = source.ColorType == SKColorType.Rgba8888 ? null : source.Copy(SKColorType.Rgba8888);
        var bmp = rgba ?? source;
        int w = bmp.Width, h = bmp.Height, plane = w * h;
        var bytes = bmp.GetPixelSpan();
        var result = new float[3 * plane];
        for (int i = 0; i < plane; i++)
        {
            result[i] = bytes[4 * i] / 255f;
            result[plane + i] = bytes[4 * i + 1] / 255f;
            result[2 * plane + i] = bytes[4 * i + 2] / 255f;
        }
        return result;
    }
}
